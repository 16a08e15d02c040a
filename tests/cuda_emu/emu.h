// Host emulation of the CUDA features used by surgesim's kernels (tests only; see __init__.py).
//
// A launch runs the grid's blocks one after another on each of a few worker threads (a block at
// a time per worker). Inside a block every CUDA thread is a fiber (its own stack, switched in
// user space), run by the worker's scheduler until it reaches a synchronisation point:
// __syncthreads (a block barrier), a warp shuffle or __syncwarp (a warp barrier: 32 lanes deposit
// their values, then each reads its partner's). Between two such points a thread runs alone, which
// is one legal CUDA schedule; with jitter (a seed) the scheduler visits the runnable threads in a
// random order and preempts a thread at random reads of blockDim (the step of every strided loop),
// so a result that depends on the order of threads between barriers shows up as a mismatch.
//
// Checked, and reported as a launch error: __syncthreads reached from different source lines
// (divergent barrier), shuffles whose mask is not the full warp or whose lanes come from different
// lines, a lane leaving while its warp waits in a shuffle, and deadlock (threads waiting on a barrier
// no other thread will reach).
#pragma once
#include <math.h>
#include <stdint.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
#define EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace emu {

struct Block;

struct Fiber {
    enum State { RUNNABLE, WAITING, DONE };
    enum Wait { NONE, AT_BLOCK, AT_WARP };  // which barrier a WAITING thread waits at
#ifdef EMU_ASM_SWITCH
    void* sp = nullptr;
#else
    ucontext_t ctx;
#endif
    char* stack = nullptr;
    Block* block = nullptr;
    dim3 tid;
    int warp = 0, lane = 0;
    State state = RUNNABLE;
    Wait wait = NONE;
    unsigned long long slot[2] = {0, 0};  // shuffle values, double-buffered by the warp's parity
};

struct Warp {
    int alive = 0, arrived = 0, line = -1, parity = 0;
    unsigned mask = 0;
};

struct Block {
    dim3 bid, bdim, gdim;
    std::vector<Fiber>* fibers = nullptr;
    std::vector<Warp> warps;
    int n = 0, alive = 0, arrived = 0, line = -1;
    std::vector<double> shared;  // dynamic shared memory (doubles: 8-byte aligned)
    std::mt19937_64 rng;
    bool jitter = false;
    std::string error;
    const std::function<void()>* kernel = nullptr;
#ifdef EMU_ASM_SWITCH
    void* sched_sp = nullptr;
#else
    ucontext_t sched;
#endif
};

inline thread_local Fiber* cur = nullptr;
inline thread_local Block* cur_block = nullptr;

#ifdef EMU_ASM_SWITCH
// emu_switch(save, to): save the callee-saved registers, the SSE/x87 control words and the stack
// pointer into *save, then continue on stack `to` (System V x86-64).
extern "C" void emu_switch(void** save, void* to);
extern "C" void emu_trampoline();
asm(R"(
.text
.globl emu_switch
.hidden emu_switch
.type emu_switch,@function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_switch, .-emu_switch
.globl emu_trampoline
.hidden emu_trampoline
.type emu_trampoline,@function
emu_trampoline:
    movq %r12, %rdi
    call emu_fiber_main
    ud2
.size emu_trampoline, .-emu_trampoline
)");
#endif

inline void to_scheduler() {
    Block* b = cur_block;
#ifdef EMU_ASM_SWITCH
    emu_switch(&cur->sp, b->sched_sp);
#else
    swapcontext(&cur->ctx, &b->sched);
#endif
}

[[noreturn]] inline void fail(const std::string& what) {
    Block* b = cur_block;
    if (b->error.empty()) {
        char where[96];
        std::snprintf(where, sizeof where, " (block %u, thread %u)", b->bid.x, cur->tid.x);
        b->error = what + where;
    }
    cur->state = Fiber::DONE;
    to_scheduler();
    __builtin_unreachable();
}

// The last thread to arrive releases the others; every thread then goes back to the scheduler,
// so the next segment starts in the scheduler's order.
inline void release_block(Block* b) {
    for (Fiber& f : *b->fibers)
        if (f.state == Fiber::WAITING && f.wait == Fiber::AT_BLOCK) f.state = Fiber::RUNNABLE, f.wait = Fiber::NONE;
    b->arrived = 0;
    b->line = -1;
}

inline void syncthreads(int line) {
    Block* b = cur_block;
    if (b->line >= 0 && b->line != line)
        fail("__syncthreads reached from lines " + std::to_string(b->line) + " and " + std::to_string(line) +
             " (divergent barrier)");
    b->line = line;
    cur->state = Fiber::WAITING;
    cur->wait = Fiber::AT_BLOCK;
    if (++b->arrived == b->alive) release_block(b);
    to_scheduler();
}

inline void check_warp_lanes(Warp& w, unsigned mask, int line) {
    if (mask != 0xffffffffu) fail("warp operation with a partial mask (the kernels use full warps only)");
    if (w.alive != 32) fail("warp operation in a warp with " + std::to_string(w.alive) + " live lanes");
    if (w.line >= 0 && w.line != line)
        fail("warp operation reached from lines " + std::to_string(w.line) + " and " + std::to_string(line));
}

// Warp rendezvous: deposit `bits`, wait for the 32 lanes, return the slot array's parity.
inline int warp_arrive(int line, unsigned mask, unsigned long long bits) {
    Block* b = cur_block;
    Warp& w = b->warps[cur->warp];
    check_warp_lanes(w, mask, line);
    w.line = line;
    const int p = w.parity;
    cur->slot[p] = bits;
    cur->state = Fiber::WAITING;
    cur->wait = Fiber::AT_WARP;
    if (++w.arrived == 32) {
        auto& fs = *b->fibers;
        for (int l = 0; l < 32; ++l) {
            Fiber& f = fs[cur->warp * 32 + l];
            f.state = Fiber::RUNNABLE;
            f.wait = Fiber::NONE;
        }
        w.arrived = 0;
        w.line = -1;
        w.parity ^= 1;
    }
    to_scheduler();
    return p;
}

enum Shfl { IDX, UP, DOWN, XOR };

template <typename T>
T shfl(int line, Shfl kind, unsigned mask, T var, int arg, int width = 32) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
    unsigned long long bits = 0;
    std::memcpy(&bits, &var, sizeof(T));
    const int p = warp_arrive(line, mask, bits);
    const int lane = cur->lane, base = lane & ~(width - 1), sub = lane - base;
    int src = lane;
    if (kind == IDX) src = base + (arg & (width - 1));
    if (kind == UP) src = sub >= arg ? lane - arg : lane;
    if (kind == DOWN) src = sub + arg < width ? lane + arg : lane;
    if (kind == XOR) src = base + ((sub ^ arg) & (width - 1));
    T out;
    std::memcpy(&out, &(*cur_block->fibers)[cur->warp * 32 + src].slot[p], sizeof(T));
    return out;
}

inline void syncwarp(int line, unsigned mask = 0xffffffffu) { warp_arrive(line, mask, 0); }

// blockDim as read by the kernel: with jitter, a read sometimes hands the core to another thread.
inline const dim3& block_dim() {
    Block* b = cur_block;
    if (b->jitter && (b->rng() & 7) == 0) to_scheduler();
    return b->bdim;
}

inline void* dynamic_shared() { return cur_block->shared.data(); }

// Called from emu_trampoline (assembly) or ucontext_entry: one translation unit per module, so not inline.
extern "C" [[noreturn]] __attribute__((used, visibility("hidden"))) void emu_fiber_main(Fiber* f) {
    (*f->block->kernel)();
    Block* b = f->block;
    f->state = Fiber::DONE;
    --b->alive;
    if (--b->warps[f->warp].alive > 0 && b->warps[f->warp].arrived > 0) {
        b->error = "a lane left its warp while the others wait in a shuffle";
    } else if (b->alive > 0 && b->arrived == b->alive) {
        release_block(b);
    }
    to_scheduler();
    __builtin_unreachable();
}

#ifndef EMU_ASM_SWITCH
inline void ucontext_entry(unsigned hi, unsigned lo) {
    emu_fiber_main(reinterpret_cast<Fiber*>((static_cast<uintptr_t>(hi) << 32) | lo));
}
#endif

constexpr size_t STACK = 256 * 1024;

struct Worker {
    std::vector<Fiber> fibers;
    std::vector<char*> stacks;
    ~Worker() {
        for (char* s : stacks) delete[] s;
    }

    void start(Fiber& f, Block& b) {
        f.block = &b;
        f.state = Fiber::RUNNABLE;
        f.wait = Fiber::NONE;
        char* top = f.stack + STACK;
#ifdef EMU_ASM_SWITCH
        // Frame popped by emu_switch: control words, r15 .. r12 (r12 = the fiber), rbx, rbp, return
        // address (the trampoline); after its `ret` the stack is 16-byte aligned for the call.
        auto* sp = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(top) & ~uintptr_t(15)) - 16) - 8;
        uint32_t mxcsr;
        uint16_t fpucw;
        asm volatile("stmxcsr %0" : "=m"(mxcsr));
        asm volatile("fnstcw %0" : "=m"(fpucw));
        sp[0] = mxcsr | (uint64_t(fpucw) << 32);
        sp[1] = sp[2] = sp[3] = 0;                    // r15, r14, r13
        sp[4] = reinterpret_cast<uint64_t>(&f);       // r12
        sp[5] = sp[6] = 0;                            // rbx, rbp
        sp[7] = reinterpret_cast<uint64_t>(&emu_trampoline);
        f.sp = sp;
#else
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = STACK;
        f.ctx.uc_link = nullptr;
        const uintptr_t p = reinterpret_cast<uintptr_t>(&f);
        makecontext(&f.ctx, reinterpret_cast<void (*)()>(&ucontext_entry), 2, unsigned(p >> 32), unsigned(p));
#endif
    }

    // Run one block to completion; returns its error ("" if none).
    std::string run(Block& b, int n) {
        while (int(stacks.size()) < n) stacks.push_back(new char[STACK]);
        fibers.resize(std::max<size_t>(fibers.size(), n));
        b.fibers = &fibers;  // fibers[0 .. n) belong to this block
        b.n = b.alive = n;
        b.warps.assign((n + 31) / 32, Warp{});
        for (int i = 0; i < n; ++i) {
            Fiber& f = fibers[i];
            f.stack = stacks[i];
            f.tid = dim3{unsigned(i % b.bdim.x), unsigned(i / b.bdim.x % b.bdim.y), unsigned(i / (b.bdim.x * b.bdim.y))};
            f.warp = i / 32;
            f.lane = i % 32;
            ++b.warps[f.warp].alive;
            start(f, b);
        }
        std::vector<int> order(n);
        for (int i = 0; i < n; ++i) order[i] = i;
        cur_block = &b;
        while (b.alive > 0 && b.error.empty()) {
            if (b.jitter) std::shuffle(order.begin(), order.end(), b.rng);
            bool ran = false;
            for (int i : order) {
                Fiber& f = fibers[i];
                if (f.state != Fiber::RUNNABLE) continue;
                ran = true;
                cur = &f;
#ifdef EMU_ASM_SWITCH
                emu_switch(&b.sched_sp, f.sp);
#else
                swapcontext(&b.sched, &f.ctx);
#endif
                if (!b.error.empty()) break;
            }
            if (!ran && b.alive > 0 && b.error.empty())
                b.error = "deadlock: " + std::to_string(b.alive) + " live threads all wait (block " +
                          std::to_string(b.bid.x) + ")";
        }
        cur = nullptr;
        cur_block = nullptr;
        return b.error;
    }
};

// The numpy dtype code ("f8", "i4", "u8"; "p" + code for a pointer) of a kernel parameter type.
template <typename T>
std::string code() {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_pointer_v<U>) {
        return "p" + code<std::remove_pointer_t<U>>();
    } else {
        static_assert(std::is_arithmetic_v<U>, "kernel parameters: numbers and pointers to numbers");
        const char kind = std::is_floating_point_v<U> ? 'f' : (std::is_signed_v<U> ? 'i' : 'u');
        return std::string(1, kind) + std::to_string(sizeof(U));
    }
}

template <typename... A>
const char* signature(void (*)(A...)) {
    static const std::string s = [] {
        std::string r;
        ((r += code<A>() + ","), ...);
        return r;
    }();
    return s.c_str();
}

template <typename... A, size_t... I>
void call(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

// Launch kernel f on grid g and blocks of bd threads; args[i] points at parameter i's value.
// Blocks go to `workers` threads; jitter_seed < 0: round-robin scheduling. Returns 0, or 1 with
// the first error in err.
template <typename... A>
int launch(void (*f)(A...), const unsigned* g, const unsigned* bd, long long shared_bytes, void** args,
           int workers, long long jitter_seed, char* err, int err_len) {
    const dim3 grid{g[0], g[1], g[2]}, block{bd[0], bd[1], bd[2]};
    const long long n_blocks = (long long)grid.x * grid.y * grid.z;
    const int n = int(block.x * block.y * block.z);
    const std::function<void()> kernel = [&] { call(f, args, std::index_sequence_for<A...>{}); };
    std::atomic<long long> next{0};
    std::atomic<bool> failed{false};
    std::string first_error;
    auto work = [&] {
        Worker w;
        Block b;
        b.gdim = grid;
        b.bdim = block;
        b.kernel = &kernel;
        b.jitter = jitter_seed >= 0;
        for (long long i; !failed && (i = next++) < n_blocks;) {
            b.bid = dim3{unsigned(i % grid.x), unsigned(i / grid.x % grid.y), unsigned(i / ((long long)grid.x * grid.y))};
            b.shared.assign((shared_bytes + 7) / 8, std::nan(""));  // uninitialised: NaN
            b.rng.seed((unsigned long long)jitter_seed * 0x9E3779B97F4A7C15ULL + (unsigned long long)i);
            b.error.clear();
            b.arrived = 0;
            b.line = -1;
            std::string e = w.run(b, n);
            if (!e.empty() && !failed.exchange(true)) first_error = e;
        }
    };
    const int nw = int(std::max(1LL, std::min<long long>(workers, n_blocks)));
    std::vector<std::thread> pool;
    for (int i = 1; i < nw; ++i) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    if (failed) {
        std::snprintf(err, err_len, "%s", first_error.c_str());
        return 1;
    }
    return 0;
}

// Atomics: a block runs on one worker, so fibers never interleave inside one; blocks on other
// workers may run at the same time, hence std::atomic_ref.
template <typename T>
T atomicAdd(T* p, T x) {
    return std::atomic_ref<T>(*p).fetch_add(x);
}
template <typename T>
T atomicExch(T* p, T x) {
    return std::atomic_ref<T>(*p).exchange(x);
}
template <typename T>
T atomicCAS(T* p, T expected, T desired) {
    std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
    return expected;
}
template <typename T>
T atomicMax(T* p, T x) {
    T old = std::atomic_ref<T>(*p).load();
    while (old < x && !std::atomic_ref<T>(*p).compare_exchange_weak(old, x)) {
    }
    return old;
}
template <typename T>
T atomicMin(T* p, T x) {
    T old = std::atomic_ref<T>(*p).load();
    while (old > x && !std::atomic_ref<T>(*p).compare_exchange_weak(old, x)) {
    }
    return old;
}

}  // namespace emu

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local
#define threadIdx (emu::cur->tid)
#define blockIdx (emu::cur_block->bid)
#define blockDim (emu::block_dim())
#define gridDim (emu::cur_block->gdim)
#define warpSize 32
#define __syncthreads() emu::syncthreads(__LINE__)
#define __syncwarp(...) emu::syncwarp(__LINE__, ##__VA_ARGS__)
#define __shfl_sync(m, v, l, ...) emu::shfl(__LINE__, emu::IDX, m, v, l, ##__VA_ARGS__)
#define __shfl_up_sync(m, v, d, ...) emu::shfl(__LINE__, emu::UP, m, v, d, ##__VA_ARGS__)
#define __shfl_down_sync(m, v, d, ...) emu::shfl(__LINE__, emu::DOWN, m, v, d, ##__VA_ARGS__)
#define __shfl_xor_sync(m, v, x, ...) emu::shfl(__LINE__, emu::XOR, m, v, x, ##__VA_ARGS__)
using emu::atomicAdd;
using emu::atomicCAS;
using emu::atomicExch;
using emu::atomicMax;
using emu::atomicMin;
