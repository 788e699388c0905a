"""A stand-in for the few torch calls test/gpu/torch_check.py makes.

Only for rehearsing test/gpu/run.sh on the simulated node (test/gpu/rehearsal):
PyTorch is not installed on build machines, and a real one would need a GPU build.
Each call goes to the CUDA driver API through ctypes (libcuda.so.1 from
LD_LIBRARY_PATH, i.e. build/simgpu, under LD_PRELOAD=libvgpu.so), so the script's
checks run against libvgpu for real; PyTorch's allocators themselves are NOT
exercised here: that needs the GPU machine.
"""

import ctypes

__version__ = "0.0+rehearsal"


class version:  # noqa: N801 (mirrors torch.version)
    cuda = "simulated"


class OutOfMemoryError(RuntimeError):
    pass


uint8 = "uint8"
_OOM = 2
_lib = None
_live = {}


def _cu():
    global _lib
    if _lib is None:
        lib = ctypes.CDLL("libcuda.so.1")
        if lib.cuInit(0) != 0:
            raise RuntimeError("cuInit failed")
        dev = ctypes.c_int()
        ctx = ctypes.c_void_p()
        if lib.cuDeviceGet(ctypes.byref(dev), 0) != 0:
            raise RuntimeError("cuDeviceGet failed")
        if lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev) != 0:
            raise RuntimeError("cuDevicePrimaryCtxRetain failed")
        if lib.cuCtxSetCurrent(ctx) != 0:
            raise RuntimeError("cuCtxSetCurrent failed")
        _lib = lib
    return _lib


class device:  # noqa: N801 (mirrors torch.device)
    def __init__(self, kind, index=0):
        self.type, self.index = kind, index


class _Tensor:
    def __init__(self, ptr, size):
        self.ptr, self.size = ptr, size
        _live[ptr] = size

    def __del__(self):
        if _live.pop(self.ptr, None) is not None:
            _cu().cuMemFree_v2(ctypes.c_uint64(self.ptr))


def empty(n, dtype=None, device=None):
    ptr = ctypes.c_uint64()
    r = _cu().cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(n))
    if r == _OOM:
        raise OutOfMemoryError("CUDA out of memory. Tried to allocate %d bytes (stand-in torch)" % n)
    if r != 0:
        raise RuntimeError("cuMemAlloc_v2 failed: %d" % r)
    return _Tensor(ptr.value, n)


class cuda:  # noqa: N801 (mirrors torch.cuda)
    OutOfMemoryError = OutOfMemoryError

    @staticmethod
    def is_available():
        try:
            _cu()
            return True
        except (OSError, RuntimeError):
            return False

    @staticmethod
    def set_device(dev):
        _cu()

    @staticmethod
    def get_device_name(dev=None):
        name = ctypes.create_string_buffer(256)
        _cu().cuDeviceGetName(name, 255, 0)
        return name.value.decode()

    @staticmethod
    def mem_get_info(dev=None):
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        if _cu().cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)) != 0:
            raise RuntimeError("cuMemGetInfo_v2 failed")
        return free.value, total.value

    @staticmethod
    def memory_reserved(dev=None):
        return sum(_live.values())

    @staticmethod
    def synchronize(dev=None):
        _cu().cuCtxSynchronize()

    @staticmethod
    def empty_cache():
        pass
