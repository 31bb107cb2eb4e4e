// The cast of fixprop's fixed/quantize.py for SHIFT >= 1 dropped bits: round, then saturate.
//   ROUND = 0: RND      (ties toward +inf): q = floor(x / 2^SHIFT) + (dropped >= half)
//   ROUND = 1: RND_CONV (ties to even):     q = floor(x / 2^SHIFT) + (dropped > half, or
//                                                dropped == half and floor(x / 2^SHIFT) is odd)
//   y = q clamped to [-2^(W_OUT-1), 2^(W_OUT-1) - 1]             (SAT; W_OUT <= 31)
module round_sat #(
    parameter W_IN = 40, SHIFT = 8, W_OUT = 16, ROUND = 1
) (
    input  wire signed [W_IN-1:0]  x,
    output wire signed [W_OUT-1:0] y
);
    wire signed [W_IN-SHIFT-1:0] floor_q = x >>> SHIFT;
    wire half = x[SHIFT-1];                 // the most significant dropped bit
    wire rest;                              // any dropped bit below it
    generate
        if (SHIFT > 1) begin : g_rest
            assign rest = |x[SHIFT-2:0];
        end else begin : g_no_rest
            assign rest = 1'b0;
        end
    endgenerate
    wire up = (ROUND == 0) ? half : (half & (rest | floor_q[0]));
    wire signed [W_IN-SHIFT:0] q = floor_q + $signed({1'b0, up});
    localparam integer MAX = (1 << (W_OUT - 1)) - 1;
    localparam integer MIN = -(1 << (W_OUT - 1));
    assign y = (q > MAX) ? MAX : (q < MIN) ? MIN : q[W_OUT-1:0];
endmodule
