// write_cells on the CPU: each (row, head) is dh values copied into its cell, a memcpy where the
// page's cells are contiguous. One call replaces the twin's index arithmetic, views and
// index_copy_ (several dispatched ops per cache per layer, which at a decode step's few dozen rows
// cost more than the bytes they move).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <cstring>

#include "write_cells.h"

namespace vllm_elastic {
namespace {

constexpr int64_t kRowsPerTask = 64;  // rows one thread copies at least (a row is heads * dh values)

struct CellArgs {
  int64_t n = 0, heads = 0, dh = 0;
};

CellArgs check_cells(const at::Tensor& page, const at::Tensor& blocks, const at::Tensor& offsets,
                     const at::Tensor& rows, const at::Tensor& values) {
  TORCH_CHECK(page.dim() == 4, "write_cells: page must be [num_blocks, heads, block_size, dh]");
  TORCH_CHECK(blocks.dim() == 1 && blocks.scalar_type() == at::kLong,
              "write_cells: blocks must be a 1-d int64 tensor");
  TORCH_CHECK(offsets.sizes() == blocks.sizes() && offsets.scalar_type() == at::kLong,
              "write_cells: offsets must match blocks (1-d int64)");
  TORCH_CHECK(rows.dim() == 1 && rows.scalar_type() == at::kLong,
              "write_cells: rows must be a 1-d int64 tensor");
  TORCH_CHECK(values.scalar_type() == page.scalar_type(),
              "write_cells: values must have the page's dtype");
  CellArgs a{blocks.size(0), page.size(1), page.size(3)};
  const bool flat = values.dim() == 2 && values.size(1) == a.heads * a.dh;
  const bool split = values.dim() == 3 && values.size(1) == a.heads && values.size(2) == a.dh;
  TORCH_CHECK(flat || split, "write_cells: values must be [T, heads * dh] or [T, heads, dh]");
  // each row's heads * dh values contiguous (rows may be strided: v is a view of the projection)
  TORCH_CHECK(values.stride(-1) == 1 && (flat || values.stride(1) == a.dh || a.heads == 1),
              "write_cells: each row of values must be contiguous");
  TORCH_CHECK(rows.numel() == 0 || rows.numel() == a.n,
              "write_cells: rows must be empty or hold one row per cell");
  TORCH_CHECK(rows.numel() > 0 || values.size(0) == a.n,
              "write_cells: without rows, values must have one row per cell");
  return a;
}

template <typename scalar_t>
void copy_cells(at::Tensor& page, const at::Tensor& blocks, const at::Tensor& offsets,
                const at::Tensor& rows, const at::Tensor& values, const CellArgs& a) {
  scalar_t* out = page.data_ptr<scalar_t>();
  const scalar_t* in = values.data_ptr<scalar_t>();
  const int64_t* blk = blocks.data_ptr<int64_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t* src_row = rows.numel() ? rows.data_ptr<int64_t>() : nullptr;
  const int64_t s0 = page.stride(0), s1 = page.stride(1), s2 = page.stride(2), s3 = page.stride(3);
  const int64_t nb = page.size(0), bs = page.size(2);
  const int64_t T = values.size(0), row_stride = values.stride(0);
  for (int64_t i = 0; i < a.n; ++i) {  // checked before any write: a bad index writes nothing
    TORCH_CHECK(blk[i] >= 0 && blk[i] < nb && off[i] >= 0 && off[i] < bs,
                "write_cells: cell (", blk[i], ", ", off[i], ") outside the page");
    TORCH_CHECK(!src_row || (src_row[i] >= 0 && src_row[i] < T), "write_cells: row ",
                src_row ? src_row[i] : i, " outside values");
  }
  at::parallel_for(0, a.n, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* src = in + (src_row ? src_row[i] : i) * row_stride;
      scalar_t* cell = out + blk[i] * s0 + off[i] * s2;
      for (int64_t h = 0; h < a.heads; ++h) {
        scalar_t* dst = cell + h * s1;
        const scalar_t* from = src + h * a.dh;
        if (s3 == 1) {
          std::memcpy(dst, from, a.dh * sizeof(scalar_t));
        } else {
          for (int64_t d = 0; d < a.dh; ++d) dst[d * s3] = from[d];
        }
      }
    }
  });
}

}  // namespace

void write_cells_cpu(at::Tensor page, const at::Tensor& blocks, const at::Tensor& offsets,
                     const at::Tensor& rows, const at::Tensor& values) {
  const CellArgs a = check_cells(page, blocks, offsets, rows, values);
  if (a.n == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, page.scalar_type(), "write_cells",
                                  [&] { copy_cells<scalar_t>(page, blocks, offsets, rows, values, a); });
}

void write_cells_meta(at::Tensor page, const at::Tensor& blocks, const at::Tensor& offsets,
                      const at::Tensor& rows, const at::Tensor& values) {
  check_cells(page, blocks, offsets, rows, values);
}

}  // namespace vllm_elastic
