"""napari dock widgets (Qt); the engines they drive live in napari_granseg.engine and need no napari.

Importing this package guards against a crash seen with CUDA builds of torch under software OpenGL
(see :func:`._tasks.avoid_triton_llvm_crash`): if napari already draws through Mesa's libLLVM, triton is
marked absent; otherwise torchvision (and with it triton) is imported now, before any GL context exists.
"""
from ._tasks import avoid_triton_llvm_crash

if not avoid_triton_llvm_crash():
    import torchvision  # noqa: F401
