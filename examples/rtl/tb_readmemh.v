// Plain Verilog testbench: feeds a fixprop bundle's layer-0 vectors ($readmemh) into dense_layer
// and grad_unit and checks acc, pre, act (every sample) and weight_grad (every step) against the
// bundle.
// Parameters (set with iverilog -P): the layer sizes, the formats of the RTL, the word widths
// of the bundle's files (manifest.json), STEPS, BATCH, ROUND and the bundle directory BUNDLE.
`timescale 1ns/1ps
module tb_readmemh;
    parameter N_IN = 3, N_OUT = 4, STEPS = 1, BATCH = 1, ROUND = 1;
    parameter W = 16, F = 8;                            // every RTL format: s16.8
    parameter W_ACC_FILE = 35;                          // word of the bundle's acc tensor (manifest.json)
    parameter BUNDLE = "bundle";
    localparam W_ACC = 2 * W + $clog2(N_IN) + 1;

    reg [N_IN*W-1:0] a;
    reg [N_OUT*N_IN*W-1:0] w;
    reg [N_OUT*W-1:0] b;
    wire [N_OUT*W_ACC-1:0] acc;
    wire [N_OUT*W-1:0] pre, act;

    dense_layer #(.N_IN(N_IN), .N_OUT(N_OUT), .W_A(W), .F_A(F), .W_W(W), .F_W(F), .W_B(W), .F_B(F),
                  .W_PRE(W), .F_PRE(F), .ROUND(ROUND)) dut (.a(a), .w(w), .b(b), .acc(acc), .pre(pre), .act(act));

    reg clk = 1'b0, clear = 1'b0, valid = 1'b0;
    reg [N_OUT*W-1:0] e;
    wire [N_OUT*N_IN*W-1:0] weight_grad;
    grad_unit #(.N_IN(N_IN), .N_OUT(N_OUT), .W_E(W), .W_A(W), .W_G(W), .SHIFT(F), .W_ACC(2 * W + 16),
                .ROUND(ROUND)) grad (.clk(clk), .clear(clear), .valid(valid), .local_error(e), .a(a),
                                     .weight_grad(weight_grad));
    reg [W-1:0] mem_local [0:BATCH*N_OUT-1];
    reg [W-1:0] mem_wgrad [0:N_OUT*N_IN-1];

    reg [W-1:0] mem_in [0:BATCH*N_IN-1];
    reg [W-1:0] mem_w [0:N_OUT*N_IN-1];
    reg [W-1:0] mem_b [0:N_OUT-1];
    reg [W_ACC_FILE-1:0] mem_acc [0:BATCH*N_OUT-1];
    reg [W-1:0] mem_pre [0:BATCH*N_OUT-1];
    reg [W-1:0] mem_act [0:BATCH*N_OUT-1];
    reg [8*2048:1] name;                                // file paths up to 2048 characters
    integer t, s, i, o, checked, failed;

    task load(input integer step);
        begin
            $sformat(name, "%0s/step%0d_layer0_input.mem", BUNDLE, step);  $readmemh(name, mem_in);
            $sformat(name, "%0s/step%0d_layer0_weight.mem", BUNDLE, step); $readmemh(name, mem_w);
            $sformat(name, "%0s/step%0d_layer0_bias.mem", BUNDLE, step);   $readmemh(name, mem_b);
            $sformat(name, "%0s/step%0d_layer0_acc.mem", BUNDLE, step);    $readmemh(name, mem_acc);
            $sformat(name, "%0s/step%0d_layer0_pre.mem", BUNDLE, step);    $readmemh(name, mem_pre);
            $sformat(name, "%0s/step%0d_layer0_act.mem", BUNDLE, step);    $readmemh(name, mem_act);
            $sformat(name, "%0s/step%0d_layer0_local.mem", BUNDLE, step);  $readmemh(name, mem_local);
            $sformat(name, "%0s/step%0d_layer0_weight_grad.mem", BUNDLE, step); $readmemh(name, mem_wgrad);
        end
    endtask

    task tick;
        begin
            #1 clk = 1'b1;
            #1 clk = 1'b0;
        end
    endtask

    task check(input [8*11:1] what, input integer step, input integer sample, input integer out,
               input signed [63:0] got, input signed [63:0] want);
        begin
            checked = checked + 1;
            if (got !== want) begin
                failed = failed + 1;
                if (failed <= 5)
                    $display("MISMATCH step %0d sample %0d %0s[%0d]: rtl %0d, bundle %0d", step, sample, what,
                             out, got, want);
            end
        end
    endtask

    initial begin
        checked = 0; failed = 0;
        for (t = 0; t < STEPS; t = t + 1) begin
            load(t);
            for (i = 0; i < N_OUT * N_IN; i = i + 1) w[i*W +: W] = mem_w[i];
            for (o = 0; o < N_OUT; o = o + 1) b[o*W +: W] = mem_b[o];
            for (s = 0; s < BATCH; s = s + 1) begin
                for (i = 0; i < N_IN; i = i + 1) a[i*W +: W] = mem_in[s*N_IN + i];
                #1;
                for (o = 0; o < N_OUT; o = o + 1) begin
                    check("acc", t, s, o, $signed(acc[o*W_ACC +: W_ACC]), $signed(mem_acc[s*N_OUT + o]));
                    check("pre", t, s, o, $signed(pre[o*W +: W]), $signed(mem_pre[s*N_OUT + o]));
                    check("act", t, s, o, $signed(act[o*W +: W]), $signed(mem_act[s*N_OUT + o]));
                end
            end
            // the weight gradient: the batch's local errors and inputs through the accumulators
            clear = 1'b1; tick; clear = 1'b0; valid = 1'b1;
            for (s = 0; s < BATCH; s = s + 1) begin
                for (i = 0; i < N_IN; i = i + 1) a[i*W +: W] = mem_in[s*N_IN + i];
                for (o = 0; o < N_OUT; o = o + 1) e[o*W +: W] = mem_local[s*N_OUT + o];
                tick;
            end
            valid = 1'b0; #1;
            for (i = 0; i < N_OUT * N_IN; i = i + 1)
                check("weight_grad", t, -1, i, $signed(weight_grad[i*W +: W]), $signed(mem_wgrad[i]));
        end
        if (failed == 0) $display("PASS %0d values checked", checked);
        else $display("FAIL %0d of %0d values differ", failed, checked);
        $finish;
    end
endmodule
