// One fixed-point dense layer of fixprop's datapath (docs/datapath.md), forward pass:
//   product = W a (exact MAC: W_A + W_W + ceil(log2 N_IN) bits)
//   acc     = product + (b << (F_A + F_W - F_B))      (the "full" accumulator role: exact)
//   pre     = cast(acc, pre role)   drop SHIFT = F_A + F_W - F_PRE bits by ROUND, saturate to W_PRE
//   act     = max(pre, 0)           (ReLU; the act role equals the pre role)
// Vectors are flattened: element i of a vector occupies bits [i*W +: W]; W is row-major (out, in).
// Synthesizable Verilog-2005.
module dense_layer #(
    parameter N_IN = 3, N_OUT = 4,
    parameter W_A = 16, F_A = 8,            // input activation format
    parameter W_W = 16, F_W = 8,            // weight format
    parameter W_B = 16, F_B = 8,            // bias format
    parameter W_PRE = 16, F_PRE = 8,        // pre-activation (and activation) format
    parameter ROUND = 1                     // 0: RND (ties toward +inf), 1: RND_CONV (ties to even)
) (
    input  wire [N_IN*W_A-1:0]        a,
    input  wire [N_OUT*N_IN*W_W-1:0]  w,
    input  wire [N_OUT*W_B-1:0]       b,
    output wire [N_OUT*W_ACC-1:0]     acc,
    output wire [N_OUT*W_PRE-1:0]     pre,
    output wire [N_OUT*W_PRE-1:0]     act
);
    localparam F_ACC = F_A + F_W;
    localparam W_PROD = W_A + W_W;
    localparam W_ACC = W_PROD + $clog2(N_IN) + 1;   // + 1: room for the bias
    localparam SHIFT = F_ACC - F_PRE;

    genvar o, i;
    generate
        for (o = 0; o < N_OUT; o = o + 1) begin : neuron
            wire signed [W_ACC-1:0] terms [0:N_IN];
            assign terms[0] = $signed(b[o*W_B +: W_B]) <<< (F_ACC - F_B);
            for (i = 0; i < N_IN; i = i + 1) begin : mac
                wire signed [W_PROD-1:0] p = $signed(a[i*W_A +: W_A]) * $signed(w[(o*N_IN + i)*W_W +: W_W]);
                assign terms[i + 1] = terms[i] + p;
            end
            assign acc[o*W_ACC +: W_ACC] = terms[N_IN];
            round_sat #(.W_IN(W_ACC), .SHIFT(SHIFT), .W_OUT(W_PRE), .ROUND(ROUND)) cast_pre (
                .x(terms[N_IN]), .y(pre[o*W_PRE +: W_PRE]));
            wire signed [W_PRE-1:0] z = pre[o*W_PRE +: W_PRE];
            assign act[o*W_PRE +: W_PRE] = z[W_PRE-1] ? {W_PRE{1'b0}} : z;
        end
    endgenerate
endmodule
