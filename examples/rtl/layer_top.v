// The cocotb testbench's top level: one dense layer (forward) and its weight-gradient unit,
// every format s16.8 (datapath_rnd.toml / datapath_rnd_conv.toml).
module layer_top #(
    parameter N_IN = 3, N_OUT = 4, ROUND = 1, W = 16, F = 8
) (
    input  wire [N_IN*W-1:0]          a,
    input  wire [N_OUT*N_IN*W-1:0]    w,
    input  wire [N_OUT*W-1:0]         b,
    output wire [N_OUT*(2*W+$clog2(N_IN)+1)-1:0] acc,
    output wire [N_OUT*W-1:0]         pre,
    output wire [N_OUT*W-1:0]         act,
    input  wire                       clk,
    input  wire                       clear,
    input  wire                       valid,
    input  wire [N_OUT*W-1:0]         local_error,
    output wire [N_OUT*N_IN*W-1:0]    weight_grad
);
    dense_layer #(.N_IN(N_IN), .N_OUT(N_OUT), .W_A(W), .F_A(F), .W_W(W), .F_W(F), .W_B(W), .F_B(F),
                  .W_PRE(W), .F_PRE(F), .ROUND(ROUND)) forward (.a(a), .w(w), .b(b), .acc(acc), .pre(pre),
                                                               .act(act));
    grad_unit #(.N_IN(N_IN), .N_OUT(N_OUT), .W_E(W), .W_A(W), .W_G(W), .SHIFT(F), .W_ACC(2 * W + 16),
                .ROUND(ROUND)) backward (.clk(clk), .clear(clear), .valid(valid), .local_error(local_error),
                                         .a(a), .weight_grad(weight_grad));
endmodule
