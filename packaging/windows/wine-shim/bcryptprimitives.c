/* Test-only shim for Wine 8, which lacks ProcessPrng in bcryptprimitives.dll; Rust's standard
 * library imports it on Windows. packaging/test-windows.sh builds this into the scratch Wine
 * prefix of the test (never into the package): ProcessPrng fills the buffer from RtlGenRandom
 * (advapi32's SystemFunction036), which Wine has. Windows 10 and later have ProcessPrng. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x7fffffff ? 0x7fffffff : (ULONG)len;
        if (!SystemFunction036(data, n)) return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
