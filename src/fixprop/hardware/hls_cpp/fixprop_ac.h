// fixprop HLS support, ac_fixed flavour (Catapult, Intel HLS): the raw-integer view of a
// fixed-point value. Written by fixprop; the types come from the Algorithmic C headers.
#ifndef FIXPROP_AC_H
#define FIXPROP_AC_H

#include <ac_fixed.h>
#include <ac_int.h>

#define FIXPROP_TYPES "ac_fixed"

namespace fixprop {

template <int W> struct int_of { typedef ac_int<W, true> type; };
template <int W> struct uint_of { typedef ac_int<W, false> type; };

// The raw integer of a W-bit value (two's complement when S, else binary), one bit wider.
template <int W, bool S, class T> ac_int<W + 1, true> raw_of(const T &v) {
    return ac_int<W + 1, true>(v.template slc<W>(0));
}

// Set a W-bit value's bits to the low W bits of the integer r (a wrap when r does not fit).
template <int W, class T, int RW> void set_raw(T &v, const ac_int<RW, true> &r) {
    v.set_slc(0, r.template slc<W>(0));
}

}  // namespace fixprop

#endif
