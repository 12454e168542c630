// Plan test: the launchers' choices (kernels/aotLaunch.h) for shapes read from stdin, one answer line
// per question line, so that tests/unit/test_plugins_build.py can compare them with
// freeact_export/kernels/variants.py and launch.py. Needs no GPU and no TensorRT.
//
//   kron D1 D2                     -> D1P D2P NUM_WARPS        (or "none")
//   matmul TOKENS N K GROUP SMS    -> BM BN BK NUM_WARPS SPLIT_K SEG_LEN SEGS SEGS_PER_SPLIT WS_SEG_DIV SPLITS
//   maxsplits TOKENS K GROUP       -> the most splits of TOKENS' tile on any GPU
//   workspace MAX_TOKENS K N GROUP -> int4MatMulWorkspaceSize in bytes
//   quantize D D1 D2 BITS KRON     -> "ok" or the refusal message
//   arch SM                        -> the table's architecture for the device (or "0 <error>")
//   archs                          -> the table's architectures
#include "kernels/aotLaunch.h"

#include <iostream>
#include <sstream>
#include <string>

int main()
{
    using namespace freeact;
    std::string line;
    while (std::getline(std::cin, line))
    {
        std::istringstream in(line);
        std::string what;
        if (!(in >> what))
        {
            continue;
        }
        if (what == "kron")
        {
            int64_t d1 = 0;
            int64_t d2 = 0;
            in >> d1 >> d2;
            aot::KronTile const* tile = aot::kronTile(d1, d2);
            if (tile == nullptr)
            {
                std::cout << "none\n";
            }
            else
            {
                std::cout << tile->d1p << " " << tile->d2p << " " << tile->numWarps << "\n";
            }
        }
        else if (what == "matmul")
        {
            int64_t tokens = 0;
            int64_t n = 0;
            int64_t k = 0;
            int64_t group = 0;
            int64_t sms = 0;
            in >> tokens >> n >> k >> group >> sms;
            aot::MatmulTile const& t = aot::matmulTile(tokens);
            aot::SplitPlan const p = aot::splitPlan(t, n, k, group, sms);
            std::cout << t.bm << " " << t.bn << " " << t.bk << " " << t.numWarps << " " << t.splitK << " " << p.segLen
                      << " " << p.segs << " " << p.segsPerSplit << " " << p.wsSegDiv << " " << p.splits << "\n";
        }
        else if (what == "maxsplits")
        {
            int64_t tokens = 0;
            int64_t k = 0;
            int64_t group = 0;
            in >> tokens >> k >> group;
            std::cout << aot::maxSplits(aot::matmulTile(tokens), k, group) << "\n";
        }
        else if (what == "workspace")
        {
            int64_t tokens = 0;
            int64_t k = 0;
            int64_t n = 0;
            int32_t group = 0;
            in >> tokens >> k >> n >> group;
            std::cout << int4MatMulWorkspaceSize(tokens, k, n, group) << "\n";
        }
        else if (what == "quantize")
        {
            QuantizeShape shape;
            in >> shape.d >> shape.d1 >> shape.d2 >> shape.bits >> shape.kronecker;
            std::string const why = quantizeUnsupported(shape);
            std::cout << (why.empty() ? "ok" : why) << "\n";
        }
        else if (what == "arch")
        {
            int32_t sm = 0;
            in >> sm;
            std::string error;
            int32_t const arch = aot::chooseArch(sm, &error);
            std::cout << arch << (arch == 0 ? " " + error : "") << "\n";
        }
        else if (what == "archs")
        {
            std::cout << aot::archList() << "\n";
        }
        else
        {
            std::cout << "unknown question: " << line << "\n";
            return 2;
        }
    }
    return 0;
}
