// The cast of fixprop's fixed/quantize.py: drop SHIFT >= 0 fraction bits by rounding, then
// saturate (SAT) to W_OUT bits.
//   ROUND = 0: RND      (ties toward +inf): q = floor(x / 2^SHIFT) + (dropped >= half)
//   ROUND = 1: RND_CONV (ties to even):     q = floor(x / 2^SHIFT) + (dropped > half, or
//                                                dropped == half and floor(x / 2^SHIFT) is odd)
//   y = q clamped to [-2^(W_OUT-1), 2^(W_OUT-1) - 1]
// Any W_IN > SHIFT and W_OUT >= 2 (q is sign-extended when W_OUT is the wider).
module round_sat #(
    parameter W_IN = 40, SHIFT = 8, W_OUT = 16, ROUND = 1
) (
    input  wire signed [W_IN-1:0]  x,
    output wire signed [W_OUT-1:0] y
);
    localparam W_Q = W_IN - SHIFT + 1;                 // the rounded value, with room for the carry
    localparam W_X = (W_Q > W_OUT + 1) ? W_Q : W_OUT + 1;
    wire signed [W_Q-1:0] q;
    generate
        if (SHIFT == 0) begin : g_exact
            assign q = x;
        end else begin : g_round
            wire signed [W_IN-SHIFT-1:0] floor_q = x >>> SHIFT;
            wire half = x[SHIFT-1];                    // the most significant dropped bit
            wire rest;                                 // any dropped bit below it
            if (SHIFT > 1) begin : g_rest
                assign rest = |x[SHIFT-2:0];
            end else begin : g_no_rest
                assign rest = 1'b0;
            end
            wire up = (ROUND == 0) ? half : (half & (rest | floor_q[0]));
            assign q = floor_q + $signed({1'b0, up});
        end
    endgenerate
    wire signed [W_X-1:0] qx = q;                                              // sign-extended
    wire signed [W_X-1:0] max_x = {{(W_X - W_OUT + 1){1'b0}}, {(W_OUT - 1){1'b1}}};  //  2^(W_OUT-1) - 1
    wire signed [W_X-1:0] min_x = {{(W_X - W_OUT + 1){1'b1}}, {(W_OUT - 1){1'b0}}};  // -2^(W_OUT-1)
    assign y = (qx > max_x) ? max_x[W_OUT-1:0] : (qx < min_x) ? min_x[W_OUT-1:0] : qx[W_OUT-1:0];
endmodule
