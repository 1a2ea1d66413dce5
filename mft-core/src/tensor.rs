//! Tensor views: a [`Layout`] (shape and element strides, rank up to [`MAX_RANK`]) over a borrowed
//! slice. [`TensorView`] and [`TensorViewMut`] are typed; [`DynTensorView`] carries its dtype at run
//! time over raw bytes (as read from a checkpoint) and is turned into a typed view with a checked
//! `bytemuck` cast.
//!
//! Views never own memory: buffers come from an [`crate::Arena`], a memory map or the caller.

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};

/// The largest rank a layout can have.
pub const MAX_RANK: usize = 4;

/// Shape and strides (in elements) of a tensor of rank `0..=MAX_RANK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    dims: [usize; MAX_RANK],
    strides: [usize; MAX_RANK],
    rank: usize,
}

impl Layout {
    /// Row-major, packed strides for `shape`.
    pub fn contiguous(shape: &[usize]) -> Result<Self> {
        let rank = shape.len();
        if rank > MAX_RANK {
            return Err(Error::RankTooLarge { rank });
        }
        let mut dims = [0; MAX_RANK];
        let mut strides = [0; MAX_RANK];
        let mut step = 1usize;
        for axis in (0..rank).rev() {
            dims[axis] = shape[axis];
            strides[axis] = step;
            step = step.checked_mul(shape[axis]).ok_or(Error::LayoutOverflow)?;
        }
        Ok(Layout { dims, strides, rank })
    }

    /// A layout with explicit strides (in elements, one per axis).
    pub fn strided(shape: &[usize], strides: &[usize]) -> Result<Self> {
        if shape.len() != strides.len() {
            return Err(Error::RankMismatch { shape: shape.len(), strides: strides.len() });
        }
        let mut layout = Layout::contiguous(shape)?;
        layout.strides[..shape.len()].copy_from_slice(strides);
        layout.span()?;
        Ok(layout)
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Length of each axis.
    pub fn dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    /// Element stride of each axis.
    pub fn strides(&self) -> &[usize] {
        &self.strides[..self.rank]
    }

    /// Number of elements (1 for rank 0).
    pub fn numel(&self) -> usize {
        // Cannot overflow: `contiguous` checked the product when the layout was built.
        self.dims().iter().product()
    }

    /// Elements of the underlying buffer the layout reaches: one past the largest offset, or 0
    /// for an empty tensor.
    pub fn span(&self) -> Result<usize> {
        if self.dims().contains(&0) {
            return Ok(0);
        }
        self.dims().iter().zip(self.strides()).try_fold(1usize, |acc, (&d, &s)| {
            (d - 1).checked_mul(s).and_then(|x| x.checked_add(acc)).ok_or(Error::LayoutOverflow)
        })
    }

    /// Whether elements are packed in row-major order (axes of length 1 may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for axis in (0..self.rank).rev() {
            if self.dims[axis] != 1 && self.strides[axis] != expected {
                return self.numel() == 0;
            }
            expected *= self.dims[axis];
        }
        true
    }

    /// Buffer offset of the element at `index` (one index per axis).
    pub fn offset(&self, index: &[usize]) -> Result<usize> {
        if index.len() != self.rank {
            return Err(Error::RankMismatch { shape: self.rank, strides: index.len() });
        }
        let mut offset = 0;
        for (axis, (&i, (&d, &s))) in
            index.iter().zip(self.dims().iter().zip(self.strides())).enumerate()
        {
            if i >= d {
                return Err(Error::OutOfBounds { axis, end: i, len: d });
            }
            offset += i * s;
        }
        Ok(offset)
    }

    /// Elements `start..start + len` of the leading axis: the buffer offset where they begin and
    /// their layout.
    fn narrow_leading(&self, start: usize, len: usize) -> Result<(usize, Layout)> {
        if self.rank == 0 {
            return Err(Error::NoLeadingAxis);
        }
        let end = start.checked_add(len).ok_or(Error::LayoutOverflow)?;
        if end > self.dims[0] {
            return Err(Error::OutOfBounds { axis: 0, end, len: self.dims[0] });
        }
        let mut layout = *self;
        layout.dims[0] = len;
        // An empty result reaches no element; starting it at 0 keeps it inside any buffer.
        let offset = if layout.numel() == 0 { 0 } else { start * self.strides[0] };
        Ok((offset, layout))
    }

    /// The layout of one leading-axis element (rank reduced by one) and its buffer offset.
    fn index_leading(&self, i: usize) -> Result<(usize, Layout)> {
        let (offset, narrowed) = self.narrow_leading(i, 1)?;
        let mut layout =
            Layout { dims: [0; MAX_RANK], strides: [0; MAX_RANK], rank: self.rank - 1 };
        layout.dims[..self.rank - 1].copy_from_slice(&narrowed.dims[1..self.rank]);
        layout.strides[..self.rank - 1].copy_from_slice(&narrowed.strides[1..self.rank]);
        Ok((offset, layout))
    }

    /// Where to cut a buffer of `buffer_len` elements to split the leading axis at `at`; fails
    /// if rows interleave in memory.
    fn split_point(&self, at: usize, buffer_len: usize) -> Result<usize> {
        if self.rank == 0 {
            return Err(Error::NoLeadingAxis);
        }
        if at > self.dims[0] {
            return Err(Error::OutOfBounds { axis: 0, end: at, len: self.dims[0] });
        }
        if at == 0 || self.numel() == 0 {
            // An empty tensor (some axis of length 0) reaches no element: any cut works.
            return Ok(0);
        }
        if at == self.dims[0] {
            return Ok(buffer_len);
        }
        let (_, row) = self.index_leading(0)?;
        let row_span = row.span()?;
        if row_span > self.strides[0] {
            return Err(Error::RowsInterleave { leading_stride: self.strides[0], row_span });
        }
        // `at < dims[0]`, so this is below the layout's span and within the buffer.
        Ok(at * self.strides[0])
    }

    fn check_fits(&self, len: usize) -> Result<()> {
        let needed = self.span()?;
        if needed > len {
            return Err(Error::BufferTooSmall { needed, len });
        }
        Ok(())
    }
}

/// A read-only typed tensor view.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a, T: Element> {
    data: &'a [T],
    layout: Layout,
}

/// A mutable typed tensor view.
#[derive(Debug)]
pub struct TensorViewMut<'a, T: Element> {
    data: &'a mut [T],
    layout: Layout,
}

/// A read-only tensor whose dtype is known only at run time, over raw bytes.
#[derive(Debug, Clone, Copy)]
pub struct DynTensorView<'a> {
    dtype: DType,
    bytes: &'a [u8],
    layout: Layout,
}

impl<'a, T: Element> TensorView<'a, T> {
    /// A contiguous view of `shape` over exactly `data`.
    pub fn from_slice(data: &'a [T], shape: &[usize]) -> Result<Self> {
        let layout = Layout::contiguous(shape)?;
        if layout.numel() != data.len() {
            return Err(Error::BufferTooSmall { needed: layout.numel(), len: data.len() });
        }
        Ok(TensorView { data, layout })
    }

    /// A view with any layout whose span fits in `data`.
    pub fn with_layout(data: &'a [T], layout: Layout) -> Result<Self> {
        layout.check_fits(data.len())?;
        Ok(TensorView { data, layout })
    }

    /// A contiguous view of `shape` over bytes, which must be aligned for `T` and hold exactly
    /// the tensor.
    pub fn from_bytes(bytes: &'a [u8], shape: &[usize]) -> Result<Self> {
        let data = bytemuck::try_cast_slice(bytes).map_err(|e| Error::from((T::DTYPE, e)))?;
        Self::from_slice(data, shape)
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// Shape and strides.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Length of each axis.
    pub fn dims(&self) -> &[usize] {
        self.layout.dims()
    }

    /// The underlying buffer (what the layout indexes into).
    pub fn data(&self) -> &'a [T] {
        self.data
    }

    /// The elements in row-major order, if the layout is contiguous.
    pub fn as_slice(&self) -> Result<&'a [T]> {
        if !self.layout.is_contiguous() {
            return Err(Error::NotContiguous);
        }
        Ok(&self.data[..self.layout.numel()])
    }

    /// The buffer's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        bytemuck::cast_slice(self.data)
    }

    /// The element at `index`.
    pub fn get(&self, index: &[usize]) -> Result<T> {
        Ok(self.data[self.layout.offset(index)?])
    }

    /// Rows `start..start + len` of the leading axis.
    pub fn narrow_leading(&self, start: usize, len: usize) -> Result<TensorView<'a, T>> {
        let (offset, layout) = self.layout.narrow_leading(start, len)?;
        Ok(TensorView { data: &self.data[offset..], layout })
    }

    /// Row `i` of the leading axis, with one axis fewer.
    pub fn index_leading(&self, i: usize) -> Result<TensorView<'a, T>> {
        let (offset, layout) = self.layout.index_leading(i)?;
        Ok(TensorView { data: &self.data[offset..], layout })
    }
}

impl<'a, T: Element> TensorViewMut<'a, T> {
    /// A contiguous view of `shape` over exactly `data`.
    pub fn from_slice(data: &'a mut [T], shape: &[usize]) -> Result<Self> {
        let layout = Layout::contiguous(shape)?;
        if layout.numel() != data.len() {
            return Err(Error::BufferTooSmall { needed: layout.numel(), len: data.len() });
        }
        Ok(TensorViewMut { data, layout })
    }

    /// A view with any layout whose span fits in `data`.
    pub fn with_layout(data: &'a mut [T], layout: Layout) -> Result<Self> {
        layout.check_fits(data.len())?;
        Ok(TensorViewMut { data, layout })
    }

    /// A contiguous view of `shape` over bytes, which must be aligned for `T` and hold exactly
    /// the tensor.
    pub fn from_bytes(bytes: &'a mut [u8], shape: &[usize]) -> Result<Self> {
        let data = bytemuck::try_cast_slice_mut(bytes).map_err(|e| Error::from((T::DTYPE, e)))?;
        Self::from_slice(data, shape)
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// Shape and strides.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Length of each axis.
    pub fn dims(&self) -> &[usize] {
        self.layout.dims()
    }

    /// A read-only view of the same elements.
    pub fn view(&self) -> TensorView<'_, T> {
        TensorView { data: self.data, layout: self.layout }
    }

    /// A shorter-lived mutable view of the same elements.
    pub fn reborrow(&mut self) -> TensorViewMut<'_, T> {
        TensorViewMut { data: self.data, layout: self.layout }
    }

    /// The elements in row-major order, if the layout is contiguous.
    pub fn as_mut_slice(&mut self) -> Result<&mut [T]> {
        if !self.layout.is_contiguous() {
            return Err(Error::NotContiguous);
        }
        let numel = self.layout.numel();
        Ok(&mut self.data[..numel])
    }

    /// The element at `index`.
    pub fn get(&self, index: &[usize]) -> Result<T> {
        Ok(self.data[self.layout.offset(index)?])
    }

    /// Write `value` at `index`.
    pub fn set(&mut self, index: &[usize], value: T) -> Result<()> {
        let offset = self.layout.offset(index)?;
        self.data[offset] = value;
        Ok(())
    }

    /// Rows `start..start + len` of the leading axis.
    pub fn narrow_leading(self, start: usize, len: usize) -> Result<TensorViewMut<'a, T>> {
        let (offset, layout) = self.layout.narrow_leading(start, len)?;
        Ok(TensorViewMut { data: &mut self.data[offset..], layout })
    }

    /// Row `i` of the leading axis, with one axis fewer.
    pub fn index_leading(self, i: usize) -> Result<TensorViewMut<'a, T>> {
        let (offset, layout) = self.layout.index_leading(i)?;
        Ok(TensorViewMut { data: &mut self.data[offset..], layout })
    }

    /// Split the leading axis into rows `..at` and `at..`, two views over disjoint memory (for
    /// handing parts of a tensor to different threads). Fails if the rows interleave in memory.
    pub fn split_leading_at(
        self,
        at: usize,
    ) -> Result<(TensorViewMut<'a, T>, TensorViewMut<'a, T>)> {
        let cut = self.layout.split_point(at, self.data.len())?;
        let (head, tail) = self.data.split_at_mut(cut);
        let mut head_layout = self.layout;
        head_layout.dims[0] = at;
        let mut tail_layout = self.layout;
        tail_layout.dims[0] = self.layout.dims[0] - at;
        Ok((
            TensorViewMut { data: head, layout: head_layout },
            TensorViewMut { data: tail, layout: tail_layout },
        ))
    }

    /// Set every element the layout reaches to `value`.
    pub fn fill(&mut self, value: T) {
        if self.layout.is_contiguous() {
            let numel = self.layout.numel();
            self.data[..numel].fill(value);
            return;
        }
        for_each_offset(&self.layout, |offset| self.data[offset] = value);
    }
}

impl<'a> DynTensorView<'a> {
    /// A contiguous tensor of `dtype` and `shape` over exactly `bytes`.
    pub fn new(dtype: DType, bytes: &'a [u8], shape: &[usize]) -> Result<Self> {
        let layout = Layout::contiguous(shape)?;
        let needed = layout.numel().checked_mul(dtype.size_bytes()).ok_or(Error::LayoutOverflow)?;
        if needed != bytes.len() {
            return Err(Error::BufferTooSmall { needed, len: bytes.len() });
        }
        Ok(DynTensorView { dtype, bytes, layout })
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape and strides.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The same tensor typed as `T`: fails if the dtype differs or the bytes are misaligned.
    pub fn typed<T: Element>(&self) -> Result<TensorView<'a, T>> {
        if T::DTYPE != self.dtype {
            return Err(Error::DTypeMismatch { expected: T::DTYPE, found: self.dtype });
        }
        let data = bytemuck::try_cast_slice(self.bytes).map_err(|e| Error::from((T::DTYPE, e)))?;
        TensorView::with_layout(data, self.layout)
    }
}

/// Call `f` with the buffer offset of every element of `layout`, in row-major index order.
pub fn for_each_offset(layout: &Layout, mut f: impl FnMut(usize)) {
    if layout.numel() == 0 {
        return;
    }
    let mut index = [0usize; MAX_RANK];
    let rank = layout.rank();
    loop {
        f((0..rank).map(|a| index[a] * layout.strides[a]).sum());
        let mut axis = rank;
        loop {
            if axis == 0 {
                return;
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < layout.dims[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::{bf16, f16};

    #[test]
    fn contiguous_layout_has_row_major_strides() {
        let l = Layout::contiguous(&[2, 3, 4]).unwrap();
        assert_eq!(l.strides(), &[12, 4, 1]);
        assert_eq!(l.numel(), 24);
        assert_eq!(l.span().unwrap(), 24);
        assert!(l.is_contiguous());
        assert_eq!(l.offset(&[1, 2, 3]).unwrap(), 23);
        assert_eq!(l.offset(&[1, 3, 0]), Err(Error::OutOfBounds { axis: 1, end: 3, len: 3 }));
        assert_eq!(Layout::contiguous(&[1, 1, 1, 1, 1]), Err(Error::RankTooLarge { rank: 5 }));
        assert_eq!(Layout::contiguous(&[usize::MAX, 3]), Err(Error::LayoutOverflow));
    }

    #[test]
    fn transposed_layout_is_not_contiguous_and_indexes_correctly() {
        let data: std::vec::Vec<f32> = (0..6).map(|x| x as f32).collect();
        // A 2x3 row-major matrix seen as its 3x2 transpose.
        let t = TensorView::with_layout(&data, Layout::strided(&[3, 2], &[1, 3]).unwrap()).unwrap();
        assert!(!t.layout().is_contiguous());
        assert_eq!(t.as_slice().unwrap_err(), Error::NotContiguous);
        assert_eq!(t.get(&[2, 1]).unwrap(), 5.0);
        assert_eq!(t.get(&[1, 0]).unwrap(), 1.0);
        let short = &data[..5];
        assert_eq!(
            TensorView::with_layout(short, *t.layout()).unwrap_err(),
            Error::BufferTooSmall { needed: 6, len: 5 }
        );
    }

    #[test]
    fn leading_axis_slices_and_rows() {
        let data: std::vec::Vec<f32> = (0..24).map(|x| x as f32).collect();
        let t = TensorView::from_slice(&data, &[4, 3, 2]).unwrap();
        let mid = t.narrow_leading(1, 2).unwrap();
        assert_eq!(mid.dims(), &[2, 3, 2]);
        assert_eq!(mid.as_slice().unwrap(), &data[6..18]);
        let row = t.index_leading(3).unwrap();
        assert_eq!(row.dims(), &[3, 2]);
        assert_eq!(row.get(&[2, 1]).unwrap(), 23.0);
        assert_eq!(
            t.narrow_leading(3, 2).unwrap_err(),
            Error::OutOfBounds { axis: 0, end: 5, len: 4 }
        );
        assert!(t.narrow_leading(4, 0).unwrap().as_slice().unwrap().is_empty());
    }

    #[test]
    fn mutable_split_gives_disjoint_halves() {
        let mut data = [0f32; 12];
        let t = TensorViewMut::from_slice(&mut data, &[4, 3]).unwrap();
        let (mut top, mut bottom) = t.split_leading_at(1).unwrap();
        assert_eq!(top.dims(), &[1, 3]);
        assert_eq!(bottom.dims(), &[3, 3]);
        top.fill(1.0);
        bottom.fill(2.0);
        bottom.set(&[2, 2], 3.0).unwrap();
        assert_eq!(data, [1., 1., 1., 2., 2., 2., 2., 2., 2., 2., 2., 3.]);
    }

    #[test]
    fn empty_tensors_split_without_touching_the_buffer() {
        // Found by the tensor_layout fuzz target: an axis of length 0 makes the span 0, so a cut
        // at `at × leading stride` would lie past the end of an empty buffer.
        let layout = Layout::strided(&[3, 0], &[5, 1]).unwrap();
        let t = TensorViewMut::<f32>::with_layout(&mut [], layout).unwrap();
        let (head, tail) = t.split_leading_at(1).unwrap();
        assert_eq!(head.dims(), &[1, 0]);
        assert_eq!(tail.dims(), &[2, 0]);
    }

    #[test]
    fn interleaved_rows_cannot_be_split() {
        let mut data = [0f32; 6];
        let layout = Layout::strided(&[3, 2], &[1, 3]).unwrap();
        let t = TensorViewMut::with_layout(&mut data, layout).unwrap();
        assert_eq!(
            t.split_leading_at(1).unwrap_err(),
            Error::RowsInterleave { leading_stride: 1, row_span: 4 }
        );
    }

    #[test]
    fn strided_fill_touches_only_the_view() {
        let mut data = [0f32; 8];
        // Every other element of the first six: a 3-element view with stride 2.
        let layout = Layout::strided(&[3], &[2]).unwrap();
        TensorViewMut::with_layout(&mut data, layout).unwrap().fill(7.0);
        assert_eq!(data, [7., 0., 7., 0., 7., 0., 0., 0.]);
    }

    #[test]
    fn bytes_reinterpret_with_checked_casts() {
        #[repr(C, align(4))]
        struct Aligned([u8; 12]);
        let mut raw = Aligned([0; 12]);
        raw.0[..4].copy_from_slice(&1.5f32.to_ne_bytes());
        raw.0[8..].copy_from_slice(&(-2.0f32).to_ne_bytes());
        let t = TensorView::<f32>::from_bytes(&raw.0, &[3]).unwrap();
        assert_eq!(t.as_slice().unwrap(), &[1.5, 0.0, -2.0]);
        assert_eq!(t.as_bytes(), &raw.0);
        assert!(matches!(
            TensorView::<f32>::from_bytes(&raw.0[1..5], &[1]),
            Err(Error::Cast { dtype: DType::F32, reason: crate::CastFailure::Misaligned })
        ));
        assert!(matches!(
            TensorView::<f32>::from_bytes(&raw.0[..6], &[1]),
            Err(Error::Cast { reason: crate::CastFailure::LengthNotMultiple, .. })
        ));

        let halves = DynTensorView::new(DType::BF16, &raw.0[..4], &[2]).unwrap();
        assert_eq!(
            halves.typed::<f16>().unwrap_err(),
            Error::DTypeMismatch { expected: DType::F16, found: DType::BF16 }
        );
        let as_bf16 = halves.typed::<bf16>().unwrap();
        // The two halves of 1.5f32: its upper 16 bits are the bf16 value 1.5.
        let upper = if cfg!(target_endian = "little") { 1 } else { 0 };
        assert_eq!(as_bf16.get(&[upper]).unwrap().to_f32(), 1.5);
        assert_eq!(
            DynTensorView::new(DType::F32, &raw.0, &[2]).unwrap_err(),
            Error::BufferTooSmall { needed: 8, len: 12 }
        );
    }

    #[test]
    fn rank_zero_is_a_scalar() {
        let data = [4.0f32];
        let s = TensorView::from_slice(&data, &[]).unwrap();
        assert_eq!(s.get(&[]).unwrap(), 4.0);
        assert_eq!(s.narrow_leading(0, 1).unwrap_err(), Error::NoLeadingAxis);
    }
}
