/* Wine 8 lacks bcryptprimitives.dll, whose ProcessPrng Rust's std (>= 1.78) imports on
   Windows. For running test binaries under Wine only: ProcessPrng via RtlGenRandom. */
#include <windows.h>
#include <ntsecapi.h>
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!RtlGenRandom(data, chunk)) return FALSE;
        data += chunk; len -= chunk;
    }
    return TRUE;
}
