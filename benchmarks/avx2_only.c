/*
 * Preloaded into a benchmark's child process (LD_PRELOAD, Linux on x86-64), this makes the
 * process see a CPU without AVX-512 and without VNNI or bfloat16 instructions: what most
 * laptops have (AVX2 and FMA). Libraries that pick their kernels from CPUID at run time
 * (oneDNN in TensorFlow, MLAS in ONNX Runtime, NumPy, OpenBLAS) then take their AVX2 paths,
 * so benchmarks.first_run can report the backbone's speed on such a CPU.
 *
 * How: the kernel's CPUID faulting (arch_prctl ARCH_SET_CPUID, 0) turns every CPUID
 * instruction into a SIGSEGV; the handler runs the real CPUID with faulting briefly off,
 * clears the feature bits, and steps over the instruction. The setting is per thread and
 * inherited by the threads started afterwards, which is every thread of interest here.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static void real_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t out[4]) {
    __asm__ volatile("cpuid" : "=a"(out[0]), "=b"(out[1]), "=c"(out[2]), "=d"(out[3]) : "a"(leaf), "c"(subleaf));
}

static void on_fault(int signal_number, siginfo_t *info, void *context) {
    (void)info;
    greg_t *registers = ((ucontext_t *)context)->uc_mcontext.gregs;
    const unsigned char *instruction = (const unsigned char *)registers[REG_RIP];
    if (instruction[0] != 0x0f || instruction[1] != 0xa2) { /* a real crash: let it crash */
        signal(signal_number, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)registers[REG_RAX], subleaf = (uint32_t)registers[REG_RCX], out[4];
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    real_cpuid(leaf, subleaf, out);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    if (leaf == 7 && subleaf == 0) {
        out[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31)); /* AVX-512 F, DQ, IFMA, PF, ER, CD, BW, VL */
        out[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));                                      /* VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ */
        out[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));            /* 4VNNIW, 4FMAPS, VP2INTERSECT, AMX, FP16 */
    }
    if (leaf == 7 && subleaf == 1) {
        out[0] &= ~((1u << 4) | (1u << 5)); /* AVX-VNNI, AVX512_BF16 */
    }
    if (leaf == 0xd && subleaf == 0) {
        out[0] &= ~0xe0u; /* no AVX-512 register state */
    }
    registers[REG_RAX] = out[0];
    registers[REG_RBX] = out[1];
    registers[REG_RCX] = out[2];
    registers[REG_RDX] = out[3];
    registers[REG_RIP] += 2;
}

__attribute__((constructor)) static void cap_instruction_sets(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &action, 0);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
}
