"""CUDA on the host, for the tests: ``surgesim.gpu``'s kernels run from their own CUDA source.

``cupy.py`` stands in for CuPy (kernels compiled from the source strings of
``surgesim.gpu._source`` by g++ with ``emu.h``); ``emu.h`` gives CUDA's thread model on the host:
one fiber per CUDA thread, block barriers, warp shuffles, a seeded scheduling jitter. The
``cuda_emulator`` and ``gpu`` fixtures in tests/conftest.py install it.
"""
