// Host test of libfreeact_trt_plugins.so through TensorRT's plugin interfaces only: the library is
// dlopen()ed (never linked), its creators come from getCreators, and every expectation about names,
// fields, attribute constraints and tensor dtypes comes from the op schema JSON that pytest writes
// from freeact_export/ops/schema.py, so the C++ side is checked against the Python contract.
//
//   freeact_host_test check LIB.so SCHEMA.json AOT.json
//                              interface checks (no GPU needed), and the library's cubin table
//                              (freeactAotManifest) against the build's aot_kernels.json
//   freeact_host_test run LIB.so CASE_DIR
//                              one op on the GPU: CASE_DIR/case.txt names the op, its attributes and
//                              input files; outputs are written back to CASE_DIR (exit 77 without a
//                              CUDA device). The GPU is reached through the driver API, dlopen()ed.
//
// The harness is hostHarness.h, the schema and library helpers hostLibrary.h; the modes are
// hostCheck.cpp (with hostAot.cpp for the cubin table) and hostRun.cpp.
#include "hostLibrary.h"

#include <exception>
#include <iostream>

int main(int argc, char** argv)
{
    try
    {
        std::string const mode = argc > 1 ? argv[1] : "";
        if (mode == "check" && argc == 5)
        {
            return hostTest::runChecks(argv[2], argv[3], argv[4]);
        }
        if (mode == "run" && argc == 4)
        {
            return hostTest::runCase(argv[2], argv[3]);
        }
        std::cerr << "usage: freeact_host_test check LIB.so SCHEMA.json AOT.json | run LIB.so CASE_DIR\n";
        return 2;
    }
    catch (std::exception const& e)
    {
        std::cout << "ERROR: " << e.what() << "\n";
        return 1;
    }
}
