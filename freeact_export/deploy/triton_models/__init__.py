"""Triton Python-backend models, copied as `<model>/1/model.py` into a repository; never imported here.

Each file is self-contained (a model folder is all Triton sees) and runs inside Triton's
Python stub, which imports `triton_python_backend_utils`. Some stubs embed an interpreter
that ignores PYTHONPATH, so each model puts PYTHONPATH's entries first on sys.path itself.
"""
