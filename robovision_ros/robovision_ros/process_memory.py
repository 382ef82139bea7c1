# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Give memory that configure needed only once back to the system."""
from __future__ import annotations


def release_memory() -> None:
    """
    Return freed heap memory to the system after one-off allocations at configure.

    Those are the int8 gate's fp32 reference and the buffers of model loading.

    glibc keeps freed blocks in its arenas for reuse, so a process that loaded and freed a 500 MB model stays 500 MB
    larger in RSS; malloc_trim gives the free pages back. A no-op where the C library has no malloc_trim.
    """
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, 'malloc_trim'):
            libc.malloc_trim(0)
    except OSError:
        pass
