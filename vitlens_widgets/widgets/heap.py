"""Handing freed memory back to the system, so a long explorer session's kernel stays its real size.

glibc keeps the pages of freed large arrays for reuse, in the arena of the thread that freed them; a
kernel that traces, projects and sorts in more than one thread keeps tens of MB that way (ViT-B/16)
unless told to give them back. Elsewhere than glibc these are no-ops.
"""

from __future__ import annotations


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc ``malloc_trim``; elsewhere a no-op)."""
    import gc

    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Hand freed heap pages (a replaced trace, a sort's temporaries) back to the system (about 1 ms).

    glibc keeps freed pages of large arrays for reuse, per thread, so a kernel answering
    from a subshell thread grows by a retrace's worth each time without it.
    """
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
