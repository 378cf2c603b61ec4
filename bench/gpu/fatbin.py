"""Fat-binary survey / pruning for a CUDA shared library (`.nv_fatbin` section).

    python3 fatbin.py survey LIB            # bytes per (kind, arch, compressed)
    python3 fatbin.py prune LIB OUT ARCH    # copy of LIB with every cubin (ELF entry) whose
                                            # SM major differs from ARCH's zeroed (headers kept)
    python3 fatbin.py check LIB             # on a GPU: loads every fat binary of LIB through the
                                            # driver (cuModuleLoadData; set CUDA_MODULE_LOADING=EAGER)

Pruning keeps every header and every PTX entry, so the fat binaries still parse; the zeroed
payloads compress to nothing. The driver picks, for an sm_90 GPU, the sm_90/90a cubin (or JITs a
PTX entry), so the zeroed cubins of other architectures are never read.
"""
import collections
import struct
import sys

FATBIN_MAGIC = 0xBA55ED50


def sections(data):
    shoff = struct.unpack_from('<Q', data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from('<HHH', data, 0x3A)
    raw = [struct.unpack_from('<IIQQQQ', data, shoff + i * shentsize) for i in range(shnum)]
    stroff = raw[shstrndx][4]
    out = {}
    for name, _typ, _flags, _addr, off, size in raw:
        end = data.index(b'\0', stroff + name)
        out[data[stroff + name:end].decode()] = (off, size)
    return out


def fatbins(data):
    """Yields (offset, size, [(kind, arch)]) for every fat binary of the `.nv_fatbin` section."""
    off, size = sections(data)['.nv_fatbin']
    pos, end = off, off + size
    while pos + 16 <= end:
        magic, _ver, hsize, fsize = struct.unpack_from('<IHHQ', data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8
            continue
        e, stop, kinds = pos + hsize, pos + hsize + fsize, []
        while e < stop:
            kind, _v, ehsize, psize = struct.unpack_from('<HHIQ', data, e)
            kinds.append((kind, struct.unpack_from('<I', data, e + 28)[0]))
            e += ehsize + psize
        yield pos, hsize + fsize, kinds
        pos = stop


def check(path):
    """Loads each fat binary with the driver's cuModuleLoadData on device 0 and unloads it again.
    A fat binary with an image for the device's SM major (or PTX) must load; the others (e.g.
    sm_120-only kernels on an H100) are expected to fail with CUDA_ERROR_NO_BINARY_FOR_GPU (209)."""
    import ctypes
    cu = ctypes.CDLL('libcuda.so.1')
    def ok(r, what):
        if r != 0:
            raise SystemExit(f'{what} failed: CUDA error {r}')
    ok(cu.cuInit(0), 'cuInit')
    dev = ctypes.c_int()
    ok(cu.cuDeviceGet(ctypes.byref(dev), 0), 'cuDeviceGet')
    major, minor = ctypes.c_int(), ctypes.c_int()
    ok(cu.cuDeviceGetAttribute(ctypes.byref(major), 75, dev), 'cuDeviceGetAttribute')  # COMPUTE_CAPABILITY_MAJOR
    ok(cu.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev), 'cuDeviceGetAttribute')
    ctx = ctypes.c_void_p()
    ok(cu.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), 'cuDevicePrimaryCtxRetain')
    ok(cu.cuCtxSetCurrent(ctx), 'cuCtxSetCurrent')
    data = open(path, 'rb').read()
    n = loaded = expected_fail = 0
    bad = collections.Counter()
    for off, size, kinds in fatbins(data):
        n += 1
        usable = any((k == 2 and a // 10 == major.value) or (k == 1 and a <= major.value * 10 + minor.value) for k, a in kinds)
        buf = ctypes.create_string_buffer(data[off:off + size], size)
        mod = ctypes.c_void_p()
        r = cu.cuModuleLoadData(ctypes.byref(mod), buf)
        if r == 0:
            loaded += 1
            cu.cuModuleUnload(mod)
        elif not usable:
            expected_fail += 1
        else:
            bad[r] += 1
    print(f'sm_{major.value}{minor.value}: {n} fat binaries, {loaded} loaded, {expected_fail} without an image for this GPU '
          f'(expected to fail), {sum(bad.values())} FAILED {dict(bad)}')
    if bad:
        raise SystemExit(1)


def entries(data):
    """Yields (payload_offset, payload_size, kind, arch, flags) for every entry of every fat binary."""
    off, size = sections(data)['.nv_fatbin']
    pos, end = off, off + size
    while pos + 16 <= end:
        magic, _ver, hsize, fsize = struct.unpack_from('<IHHQ', data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # padding between fat binaries
            continue
        e = pos + hsize
        stop = pos + hsize + fsize
        while e < stop:
            kind, _v, ehsize, psize = struct.unpack_from('<HHIQ', data, e)
            arch = struct.unpack_from('<I', data, e + 28)[0]
            flags = struct.unpack_from('<Q', data, e + 40)[0]
            yield e + ehsize, psize, kind, arch, flags
            e += ehsize + psize
        pos = stop


def survey(path):
    data = open(path, 'rb').read()
    tally = collections.Counter()
    count = collections.Counter()
    for _o, n, kind, arch, flags in entries(data):
        magic = data[_o:_o + 4]
        packed = 'zstd' if magic == b'\x28\xb5\x2f\xfd' else 'lz4?' if flags & 0x2000 else 'zeroed' if not data[_o:_o + 64].strip(b'\0') else 'plain'
        key = ({1: 'ptx', 2: 'cubin'}.get(kind, f'kind{kind}'), arch, packed)
        tally[key] += n
        count[key] += 1
    total = sum(tally.values())
    for key in sorted(tally):
        print(f'{key[0]:6} sm_{key[1]:<4} {key[2]:10} {count[key]:6} entries {tally[key] / 2**20:9.1f} MiB')
    print(f'total {total / 2**20:.1f} MiB in .nv_fatbin entries')


def prune(path, out, arch):
    keep_major = int(arch) // 10
    data = bytearray(open(path, 'rb').read())
    zeroed = 0
    for o, n, kind, a, _flags in entries(bytes(data)):
        if kind == 2 and a // 10 != keep_major:
            data[o:o + n] = bytes(n)
            zeroed += n
    open(out, 'wb').write(data)
    print(f'zeroed {zeroed / 2**20:.1f} MiB of cubins for SM majors other than {keep_major}')


if __name__ == '__main__':
    if sys.argv[1] == 'survey':
        survey(sys.argv[2])
    elif sys.argv[1] == 'prune':
        prune(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1] == 'check':
        check(sys.argv[2])
    else:
        sys.exit(__doc__)
