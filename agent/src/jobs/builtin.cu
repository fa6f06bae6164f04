typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

/* FIPS 180-4 section 4.2.2 */
__constant__ u32 SHA256_K[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u
};

__device__ __forceinline__ u32 rotr32(u32 x, u32 n) { return (x >> n) | (x << (32u - n)); }

/* One compression of a 64-byte block (FIPS 180-4 section 6.2.2). */
__device__ void sha256_compress(u32 st[8], const u8* block) {
    u32 w[64];
    for (int t = 0; t < 16; t++) {
        w[t] = ((u32)block[4 * t] << 24) | ((u32)block[4 * t + 1] << 16)
             | ((u32)block[4 * t + 2] << 8) | (u32)block[4 * t + 3];
    }
    for (int t = 16; t < 64; t++) {
        u32 s0 = rotr32(w[t - 15], 7) ^ rotr32(w[t - 15], 18) ^ (w[t - 15] >> 3);
        u32 s1 = rotr32(w[t - 2], 17) ^ rotr32(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    u32 a = st[0], b = st[1], c = st[2], d = st[3], e = st[4], f = st[5], g = st[6], h = st[7];
    for (int t = 0; t < 64; t++) {
        u32 t1 = h + (rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25)) + ((e & f) ^ (~e & g))
               + SHA256_K[t] + w[t];
        u32 t2 = (rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    st[0] += a; st[1] += b; st[2] += c; st[3] += d;
    st[4] += e; st[5] += f; st[6] += g; st[7] += h;
}

/* Items [first, end): one thread per item. */
extern "C" __global__ void sha256_batch(const u8* input, u64 item_len, u64 first, u64 end, u8* out) {
    u64 idx = first + (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= end) return;
    const u8* msg = input + idx * item_len;
    u32 st[8] = { 0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                  0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u };
    u64 full = item_len / 64;
    for (u64 b = 0; b < full; b++) sha256_compress(st, msg + b * 64);
    /* Padding (section 5.1.1): the tail, 0x80, zeros, the length in bits big-endian. */
    u64 rem = item_len - full * 64;
    u8 tail[128];
    for (int j = 0; j < 128; j++) tail[j] = 0;
    for (u64 j = 0; j < rem; j++) tail[j] = msg[full * 64 + j];
    tail[rem] = 0x80;
    int blocks = rem + 9 <= 64 ? 1 : 2;
    u64 bits = item_len * 8;
    for (int j = 0; j < 8; j++) tail[blocks * 64 - 1 - j] = (u8)(bits >> (8 * j));
    sha256_compress(st, tail);
    if (blocks == 2) sha256_compress(st, tail + 64);
    u8* o = out + idx * 32;
    for (int j = 0; j < 8; j++) {
        o[4 * j] = (u8)(st[j] >> 24); o[4 * j + 1] = (u8)(st[j] >> 16);
        o[4 * j + 2] = (u8)(st[j] >> 8); o[4 * j + 3] = (u8)st[j];
    }
}

/* Q8.56: bits 56..119 of the signed 128-bit product, as Rust's ((a*b as i128) >> 56) as i64.
   Signed overflow is undefined in C, so every wrapping add goes through u64. */
#define FRAC_BITS 56
__device__ __forceinline__ i64 fixed_mul(i64 a, i64 b) {
    u64 lo = (u64)a * (u64)b;
    u64 hi = (u64)__mul64hi(a, b);
    return (i64)((hi << (64 - FRAC_BITS)) | (lo >> FRAC_BITS));
}

/* Pixels [first, end) of the tile, row-major: one thread per pixel. */
extern "C" __global__ void mandelbrot(i64 x0, i64 y0, i64 step, u32 width, u32 max_iter,
                                      u64 first, u64 end, u32* out) {
    u64 p = first + (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= end) return;
    u64 row = p / width, col = p % width;
    i64 cx = (i64)((u64)x0 + col * (u64)step);
    i64 cy = (i64)((u64)y0 + row * (u64)step);
    const i64 FOUR = (i64)4 << FRAC_BITS;
    i64 x = 0, y = 0;
    u32 i;
    for (i = 0; i < max_iter; i++) {
        i64 x2 = fixed_mul(x, x);
        i64 y2 = fixed_mul(y, y);
        if ((i64)((u64)x2 + (u64)y2) > FOUR) break;
        i64 xy = fixed_mul(x, y);
        y = (i64)((u64)xy + (u64)xy + (u64)cy);
        x = (i64)((u64)x2 - (u64)y2 + (u64)cx);
    }
    out[p] = i;
}

/* Rows [row0, row_end) of C = A (m x k) . B (k x n), row-major, 16x16 shared-memory tiles. */
#define TILE 16
extern "C" __global__ void matmul_f32(const float* A, const float* B, float* C,
                                      u32 n, u32 k, u32 row0, u32 row_end) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE + 1];
    u32 tx = threadIdx.x, ty = threadIdx.y;
    u32 row = row0 + blockIdx.y * TILE + ty;
    u32 col = blockIdx.x * TILE + tx;
    float acc = 0.0f;
    for (u32 t = 0; t < k; t += TILE) {
        As[ty][tx] = (row < row_end && t + tx < k) ? A[(u64)row * k + t + tx] : 0.0f;
        Bs[ty][tx] = (col < n && t + ty < k) ? B[(u64)(t + ty) * n + col] : 0.0f;
        __syncthreads();
        for (int p = 0; p < TILE; p++) acc += As[ty][p] * Bs[p][tx];
        __syncthreads();
    }
    if (row < row_end && col < n) C[(u64)row * n + col] = acc;
}
