"""Triton kernels of snlt_fast, one module per op (installed as snlt_fast.kernels).

On a machine without a GPU they run only through the Triton interpreter, which
must be enabled (TRITON_INTERPRET=1) before triton is first imported.
"""
