// fixprop C-simulation testbench support: reads an export bundle's .mem files (docs/hardware.md,
// "The bundle") and compares the kernel's values with them, integer by integer. Plain C++ for
// the C simulation (not for synthesis). Written by fixprop.
#ifndef FIXPROP_TB_H
#define FIXPROP_TB_H

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace fixprop_tb {

// Exit status: 0 every value equal, 1 a mismatch, 2 the bundle cannot be read.
enum { PASS = 0, MISMATCH = 1, BAD_BUNDLE = 2 };

inline void bad_bundle(const std::string &message) {
    std::fprintf(stderr, "testbench: error: %s\n", message.c_str());
    std::exit(BAD_BUNDLE);
}

// One tensor of the bundle: the format its header states, and its hex words (row-major).
struct Tensor {
    std::string file, format;
    std::vector<std::string> words;
};

// The bundle directory: tensor "step0/layer1/pre" is the file step0_layer1_pre.mem.
struct Bundle {
    std::string dir;
    long checked;
    explicit Bundle(const std::string &d) : dir(d), checked(0) {}

    std::string file_of(const std::string &name) const {
        std::string stem = name;
        for (size_t i = 0; i < stem.size(); i++)
            if (stem[i] == '/') stem[i] = '_';
        return dir + "/" + stem + ".mem";
    }

    bool has(const std::string &name) const {
        std::ifstream in(file_of(name).c_str());
        return in.good();
    }

    Tensor read(const std::string &name) const {
        Tensor t;
        t.file = file_of(name);
        std::ifstream in(t.file.c_str());
        if (!in.good()) bad_bundle(t.file + " is missing (tensor " + name + ")");
        std::string line;
        int number = 0;
        while (std::getline(in, line)) {
            number++;
            if (number == 2) {  // "// shape [..] format s24.12 (word ..."
                size_t at = line.find(" format ");
                if (line.compare(0, 2, "//") != 0 || at == std::string::npos)
                    bad_bundle(t.file + ": line 2 is not a '// shape [...] format sW.F' header");
                size_t start = at + 8, end = line.find(' ', start);
                t.format = line.substr(start, end == std::string::npos ? std::string::npos : end - start);
            }
            size_t comment = line.find("//");
            if (comment != std::string::npos) line = line.substr(0, comment);
            size_t a = line.find_first_not_of(" \t\r"), b = line.find_last_not_of(" \t\r");
            if (a != std::string::npos) t.words.push_back(line.substr(a, b - a + 1));
        }
        return t;
    }
};

// Hex digits of a value of a W-bit word: ceil(W / 4), lower case, the low W bits of the raw integer.
template <int W, bool S, class T> std::string hex_word(const T &v) {
    const typename fixprop::int_of<W + 1>::type raw = fixprop::raw_of<W, S>(v);
    const int digits = (W + 3) / 4;
    std::string out(digits, '0');
    for (int d = 0; d < digits; d++) {
        int nibble = 0;
        for (int b = 0; b < 4 && 4 * d + b < W; b++)
            if (raw[4 * d + b]) nibble |= 1 << b;
        out[digits - 1 - d] = "0123456789abcdef"[nibble];
    }
    return out;
}

// The value of type T whose W bits are the hex word.
template <int W, class T> T from_hex(const std::string &word, const std::string &file) {
    typedef typename fixprop::int_of<W + 5>::type int_t;
    int_t raw = 0;
    for (size_t i = 0; i < word.size(); i++) {
        const char c = word[i];
        int nibble;
        if (c >= '0' && c <= '9') nibble = c - '0';
        else if (c >= 'a' && c <= 'f') nibble = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') nibble = c - 'A' + 10;
        else bad_bundle(file + ": '" + word + "' is not a hexadecimal word");
        raw = (raw << 4) | int_t(nibble);
    }
    T v;
    fixprop::set_raw<W>(v, raw);
    return v;
}

inline void check_shape(const Tensor &t, const std::string &name, const char *format, int count) {
    if (t.format != format)
        bad_bundle(t.file + ": tensor " + name + " has format " + t.format + ", the kernel " + format +
                   " (a bundle of another datapath or network?)");
    if ((int)t.words.size() != count)
        bad_bundle(t.file + ": tensor " + name + " has " + std::to_string(t.words.size()) + " values, the kernel " +
                   std::to_string(count));
}

// Load a tensor into the kernel's values (inputs, targets, the initial state).
template <int W, class T> void load(Bundle &bundle, const std::string &name, const char *format, T *values,
                                    int count) {
    const Tensor t = bundle.read(name);
    check_shape(t, name, format, count);
    for (int i = 0; i < count; i++) values[i] = from_hex<W, T>(t.words[i], t.file);
}

// Compare the kernel's values with a tensor; on the first difference print where and exit 1.
template <int W, bool S, class T> void check(Bundle &bundle, int step, int layer, const char *stage,
                                             const char *format, const T *values, int count, int columns) {
    const std::string name = "step" + std::to_string(step) + (layer >= 0 ? "/layer" + std::to_string(layer) : "") +
                             "/" + stage;
    const Tensor t = bundle.read(name);
    check_shape(t, name, format, count);
    for (int i = 0; i < count; i++) {
        const std::string got = hex_word<W, S>(values[i]);
        std::string want = t.words[i];
        for (size_t c = 0; c < want.size(); c++) want[c] = (char)std::tolower((unsigned char)want[c]);
        if (got != want) {
            const T expected = from_hex<W, T>(want, t.file);
            char place[64] = "";
            if (count > columns) std::snprintf(place, sizeof place, " (row %d, column %d)", i / columns, i % columns);
            std::printf("MISMATCH step %d layer %d stage %s index %d%s: expected 0x%s (%.10g) "
                        "got 0x%s (%.10g) [format %s, %s]\n",
                        step, layer, stage, i, place, want.c_str(), expected.to_double(),
                        got.c_str(), values[i].to_double(), format, t.file.c_str());
            std::exit(MISMATCH);
        }
    }
    bundle.checked += count;
}

// The LFSR lanes at a step's start against step{t}/lfsr_state (the lanes used so far).
inline void check_lanes(Bundle &bundle, int step, const uint64_t *lanes, int n_lanes) {
    const std::string name = "step" + std::to_string(step) + "/lfsr_state";
    if (!bundle.has(name)) return;  // no lane used yet
    const Tensor t = bundle.read(name);
    if ((int)t.words.size() > n_lanes)
        bad_bundle(t.file + ": " + std::to_string(t.words.size()) + " LFSR lanes, the kernel has " +
                   std::to_string(n_lanes));
    for (size_t i = 0; i < t.words.size(); i++) {
        const uint64_t want = std::strtoull(t.words[i].c_str(), 0, 16);
        if (want != lanes[i]) {
            std::printf("MISMATCH step %d layer -1 stage lfsr_state index %d: expected 0x%llx got 0x%llx [%s]\n",
                        step, (int)i, (unsigned long long)want, (unsigned long long)lanes[i], t.file.c_str());
            std::exit(MISMATCH);
        }
    }
    bundle.checked += (long)t.words.size();
}

}  // namespace fixprop_tb

#endif
