// The weight-gradient unit of fixprop's datapath (docs/datapath.md, backward step 3):
//   weight_grad[o][i] = cast(sum over the batch of local[o] * a[i], weight_grad role)
// One sample per clock while `valid`; `clear` empties the accumulators. The products and their
// sum are exact (W_E + W_A + ceil(log2 batch) bits fit W_ACC); the cast drops SHIFT bits by ROUND
// and saturates to W_G bits (round_sat.v). Flattened vectors as in dense_layer.v.
module grad_unit #(
    parameter N_IN = 3, N_OUT = 4,
    parameter W_E = 16, W_A = 16,           // local error and input activation words
    parameter W_G = 16, SHIFT = 8,          // weight-gradient word; fraction bits dropped
    parameter W_ACC = 48, ROUND = 1
) (
    input  wire                        clk,
    input  wire                        clear,
    input  wire                        valid,
    input  wire [N_OUT*W_E-1:0]        local_error,
    input  wire [N_IN*W_A-1:0]         a,
    output wire [N_OUT*N_IN*W_G-1:0]   weight_grad
);
    genvar o, i;
    generate
        for (o = 0; o < N_OUT; o = o + 1) begin : row
            for (i = 0; i < N_IN; i = i + 1) begin : col
                reg signed [W_ACC-1:0] acc;
                wire signed [W_E+W_A-1:0] p = $signed(local_error[o*W_E +: W_E]) * $signed(a[i*W_A +: W_A]);
                always @(posedge clk) begin
                    if (clear) acc <= {W_ACC{1'b0}};
                    else if (valid) acc <= acc + p;
                end
                round_sat #(.W_IN(W_ACC), .SHIFT(SHIFT), .W_OUT(W_G), .ROUND(ROUND)) cast_grad (
                    .x(acc), .y(weight_grad[(o*N_IN + i)*W_G +: W_G]));
            end
        end
    endgenerate
endmodule
