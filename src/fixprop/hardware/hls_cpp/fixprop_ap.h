// fixprop HLS support, ap_fixed flavour (Vitis HLS): the raw-integer view of a fixed-point value.
// Written by fixprop; the types come from Xilinx's ap_types headers (ap_fixed.h, ap_int.h).
#ifndef FIXPROP_AP_H
#define FIXPROP_AP_H

#include <ap_fixed.h>
#include <ap_int.h>

#define FIXPROP_TYPES "ap_fixed"

namespace fixprop {

// Signed and unsigned integers of any width (exact integer code of the explicit casts).
template <int W> struct int_of { typedef ap_int<W> type; };
template <int W> struct uint_of { typedef ap_uint<W> type; };

// The raw integer of a W-bit value (two's complement when S, else binary), one bit wider.
template <int W, bool S, class T> ap_int<W + 1> raw_of(const T &v) {
    if (S) {
        ap_int<W> r;
        r.range(W - 1, 0) = v.range(W - 1, 0);
        return r;
    }
    ap_uint<W> r;
    r.range(W - 1, 0) = v.range(W - 1, 0);
    return r;
}

// Set a W-bit value's bits to the low W bits of the integer r (a wrap when r does not fit).
template <int W, class T, int RW> void set_raw(T &v, const ap_int<RW> &r) {
    v.range(W - 1, 0) = r.range(W - 1, 0);
}

}  // namespace fixprop

#endif
