// write_cells: a step's rows into their cells of one paged cache, in one call. Semantics: the
// torch twin vllm_elastic/core/page_cells.py write_cells_ref.
#pragma once

#include <ATen/core/Tensor.h>

namespace vllm_elastic {

// page [num_blocks, heads, block_size, dh] (any strides); blocks, offsets [n] int64: the cell of
// written row i; rows [n] int64: the packed row of values it takes, or empty (row i); values
// [T, heads * dh] or [T, heads, dh] of the page's dtype, each row's values contiguous.
void write_cells_cpu(at::Tensor page, const at::Tensor& blocks, const at::Tensor& offsets,
                     const at::Tensor& rows, const at::Tensor& values);

void write_cells_meta(at::Tensor page, const at::Tensor& blocks, const at::Tensor& offsets,
                      const at::Tensor& rows, const at::Tensor& values);

}  // namespace vllm_elastic
