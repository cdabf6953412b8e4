module counter(input clk, input rst, output reg [7:0] q, output wrap);
  always @(posedge clk) q <= rst ? 8'd0 : q + 8'd1;
  assign wrap = &q;
endmodule
