//! The one error type of mft-core: every fallible operation on arenas, shapes and tensor views
//! returns [`Error`], whose variants name the request and the limit it ran into.

use core::fmt;

use crate::dtype::DType;

/// Result alias for mft-core.
pub type Result<T> = core::result::Result<T, Error>;

/// Everything that can go wrong in mft-core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// An arena could not satisfy an allocation.
    OutOfMemory {
        /// Bytes asked for (without alignment padding).
        requested: usize,
        /// Alignment asked for, in bytes.
        align: usize,
        /// Bytes still free in the arena before the request.
        remaining: usize,
        /// Total bytes the arena manages.
        capacity: usize,
    },
    /// An alignment that is zero or not a power of two.
    InvalidAlignment {
        /// The alignment given.
        align: usize,
    },
    /// `count × element size` does not fit in `usize`.
    SizeOverflow {
        /// Number of elements asked for.
        count: usize,
        /// Size of one element in bytes.
        elem_size: usize,
    },
    /// A mark taken from a later state (or from another arena) was passed to `rewind`.
    StaleMark {
        /// Offset recorded in the mark.
        mark: usize,
        /// Bytes in use when `rewind` was called.
        used: usize,
    },
    /// A shape with more axes than [`crate::MAX_RANK`].
    RankTooLarge {
        /// Rank asked for.
        rank: usize,
    },
    /// Shape and strides have different ranks.
    RankMismatch {
        /// Rank of the shape.
        shape: usize,
        /// Number of strides given.
        strides: usize,
    },
    /// A shape or stride whose extent overflows `usize`.
    LayoutOverflow,
    /// A tensor view would reach past the end of its buffer.
    BufferTooSmall {
        /// Elements the layout needs.
        needed: usize,
        /// Elements the buffer holds.
        len: usize,
    },
    /// An index or range outside an axis.
    OutOfBounds {
        /// Axis indexed.
        axis: usize,
        /// First index past the request (or the index itself).
        end: usize,
        /// Length of that axis.
        len: usize,
    },
    /// An operation on a rank-0 tensor that needs at least one axis.
    NoLeadingAxis,
    /// A view whose leading-axis rows interleave in memory, so it cannot be split into disjoint parts.
    RowsInterleave {
        /// Stride of the leading axis.
        leading_stride: usize,
        /// Span in elements of one leading-axis row.
        row_span: usize,
    },
    /// An operation that needs a contiguous (row-major, packed) layout.
    NotContiguous,
    /// A dtype-erased tensor was read as another dtype.
    DTypeMismatch {
        /// The dtype asked for.
        expected: DType,
        /// The dtype the tensor holds.
        found: DType,
    },
    /// Bytes could not be reinterpreted as elements.
    Cast {
        /// Element dtype of the cast.
        dtype: DType,
        /// Why bytemuck refused.
        reason: CastFailure,
    },
}

/// Why a byte buffer could not be viewed as typed elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastFailure {
    /// The buffer's address is not aligned for the element type.
    Misaligned,
    /// The buffer's length is not a multiple of the element size.
    LengthNotMultiple,
}

impl From<(DType, bytemuck::PodCastError)> for Error {
    fn from((dtype, err): (DType, bytemuck::PodCastError)) -> Self {
        let reason = match err {
            bytemuck::PodCastError::TargetAlignmentGreaterAndInputNotAligned
            | bytemuck::PodCastError::AlignmentMismatch => CastFailure::Misaligned,
            bytemuck::PodCastError::OutputSliceWouldHaveSlop
            | bytemuck::PodCastError::SizeMismatch => CastFailure::LengthNotMultiple,
        };
        Error::Cast { dtype, reason }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::OutOfMemory { requested, align, remaining, capacity } => write!(
                f,
                "arena exhausted: requested {requested} bytes ({align}-byte aligned), \
                 {remaining} bytes left of {capacity}"
            ),
            Error::InvalidAlignment { align } => {
                write!(f, "alignment {align} is not a power of two")
            }
            Error::SizeOverflow { count, elem_size } => {
                write!(f, "{count} elements of {elem_size} bytes overflow the address space")
            }
            Error::StaleMark { mark, used } => write!(
                f,
                "cannot rewind to offset {mark}: only {used} bytes are in use \
                 (mark taken from a later state or another arena)"
            ),
            Error::RankTooLarge { rank } => {
                write!(f, "rank {rank} exceeds the maximum rank {}", crate::MAX_RANK)
            }
            Error::RankMismatch { shape, strides } => {
                write!(f, "shape has {shape} axes but {strides} strides were given")
            }
            Error::LayoutOverflow => write!(f, "tensor extent overflows the address space"),
            Error::BufferTooSmall { needed, len } => {
                write!(f, "layout needs {needed} elements but the buffer holds {len}")
            }
            Error::OutOfBounds { axis, end, len } => {
                write!(f, "index {end} out of bounds for axis {axis} of length {len}")
            }
            Error::NoLeadingAxis => write!(f, "a rank-0 tensor has no leading axis"),
            Error::RowsInterleave { leading_stride, row_span } => write!(
                f,
                "rows of the leading axis interleave (stride {leading_stride} < row span \
                 {row_span}), so the view cannot be split"
            ),
            Error::NotContiguous => write!(f, "operation needs a contiguous layout"),
            Error::DTypeMismatch { expected, found } => {
                write!(f, "tensor holds {found}, not {expected}")
            }
            Error::Cast { dtype, reason } => match reason {
                CastFailure::Misaligned => {
                    write!(f, "bytes are not aligned to {} for {dtype}", dtype.size_bytes())
                }
                CastFailure::LengthNotMultiple => write!(
                    f,
                    "byte length is not a multiple of {} ({dtype} element size)",
                    dtype.size_bytes()
                ),
            },
        }
    }
}

impl core::error::Error for Error {}
