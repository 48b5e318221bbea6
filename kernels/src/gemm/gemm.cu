// Batched GEMM C[b] = A[b]·B[b] (m×k times k×n), either operand possibly stored transposed.
//
// Shared-memory tiling, the first rung of a GPU GEMM: a 16×16 block of threads computes a
// 16×16 tile of C. For each 16-wide slice of k it loads a 16×16 tile of A and of B into shared
// memory (each thread one element of each), waits, and every thread accumulates its dot
// product over the slice from shared memory. Each value loaded from global memory is used 16
// times. blockIdx.z is the batch index.

#define TILE 16

extern "C" __global__ void gemm_tiled(const float* A, const float* B, float* C, u32 m, u32 k,
                                      u32 n, int trans_a, int trans_b) {
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE + 1];  // +1: no bank conflicts on the column reads
    u64 batch = blockIdx.z;
    A += batch * m * k;
    B += batch * k * n;
    C += batch * m * n;
    u32 row = blockIdx.y * TILE + threadIdx.y, col = blockIdx.x * TILE + threadIdx.x;
    float acc = 0.0f;
    for (u32 p0 = 0; p0 < k; p0 += TILE) {
        u32 pa = p0 + threadIdx.x, pb = p0 + threadIdx.y;
        As[threadIdx.y][threadIdx.x] =
            (row < m && pa < k) ? A[trans_a ? (u64)pa * m + row : (u64)row * k + pa] : 0.0f;
        Bs[threadIdx.y][threadIdx.x] =
            (pb < k && col < n) ? B[trans_b ? (u64)col * k + pb : (u64)pb * n + col] : 0.0f;
        __syncthreads();
        for (int q = 0; q < TILE; ++q) acc += As[threadIdx.y][q] * Bs[q][threadIdx.x];
        __syncthreads();
    }
    if (row < m && col < n) C[(u64)row * n + col] = acc;
}
