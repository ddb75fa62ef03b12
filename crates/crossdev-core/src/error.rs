//! The one error type of crossdev: a stable machine-readable code plus the message a user reads.
//!
//! Messages reproduce TensorFlow's wording where TensorFlow had one (SPEC Part A.1), so code and
//! tests ported from TensorFlow keep matching; the code lets callers branch without parsing text.

use std::fmt;

/// Stable error codes. The string form (`ERR_…`) is part of the public API and never changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `destinations` is `""`, `[]`, or a variable without a device.
    EmptyDestinations,
    /// `destinations` is of a kind that cannot name devices.
    InvalidDestinations,
    /// A reduce input could not be turned into a `PerDevice` value.
    InvalidInput,
    /// `value_destination_pairs` is malformed.
    InvalidPairs,
    /// A `PerDevice` value with no component.
    EmptyValue,
    /// A reduce op that the path does not support.
    InvalidReduceOp,
    /// Tensors that must agree in shape do not.
    ShapeMismatch,
    /// Tensors that must agree in dtype do not.
    DtypeMismatch,
    /// A device string that cannot be parsed.
    InvalidDevice,
    /// A device that is not in a per-device value.
    DeviceNotFound,
    /// An unknown dtype name, or data whose length does not fit the dtype and shape.
    InvalidTensor,
    /// An option out of its allowed range (e.g. an unknown accumulation function).
    InvalidArgument,
    /// A CUDA library (driver, NVRTC, NCCL) or a GPU is missing.
    NoCuda,
    /// A CUDA call failed (the message names it and CUDA's error).
    Cuda,
    /// A GPU tensor was used after `dispose()` (or its handle is unknown to this process).
    Disposed,
    /// A cross-process op did not complete in time (a rank died, hangs or runs another op).
    Timeout,
    /// A rank of the process group is gone (its process ended or its link broke).
    PeerLost,
    /// The ranks of a process group called different ops, or the same op on different values.
    RankMismatch,
    /// Malformed request between the bindings and the core (a bug in a binding).
    Protocol,
    /// An internal failure (a panic caught at the boundary). Always a bug: please report it.
    Internal,
}

impl ErrorCode {
    /// The stable `ERR_…` string of this code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::EmptyDestinations => "ERR_EMPTY_DESTINATIONS",
            ErrorCode::InvalidDestinations => "ERR_INVALID_DESTINATIONS",
            ErrorCode::InvalidInput => "ERR_INVALID_INPUT",
            ErrorCode::InvalidPairs => "ERR_INVALID_PAIRS",
            ErrorCode::EmptyValue => "ERR_EMPTY_VALUE",
            ErrorCode::InvalidReduceOp => "ERR_INVALID_REDUCE_OP",
            ErrorCode::ShapeMismatch => "ERR_SHAPE_MISMATCH",
            ErrorCode::DtypeMismatch => "ERR_DTYPE_MISMATCH",
            ErrorCode::InvalidDevice => "ERR_INVALID_DEVICE",
            ErrorCode::DeviceNotFound => "ERR_DEVICE_NOT_FOUND",
            ErrorCode::InvalidTensor => "ERR_INVALID_TENSOR",
            ErrorCode::InvalidArgument => "ERR_INVALID_ARGUMENT",
            ErrorCode::NoCuda => "ERR_NO_CUDA",
            ErrorCode::Cuda => "ERR_CUDA",
            ErrorCode::Disposed => "ERR_DISPOSED",
            ErrorCode::Timeout => "ERR_TIMEOUT",
            ErrorCode::PeerLost => "ERR_PEER_LOST",
            ErrorCode::RankMismatch => "ERR_RANK_MISMATCH",
            ErrorCode::Protocol => "ERR_PROTOCOL",
            ErrorCode::Internal => "ERR_INTERNAL",
        }
    }
}

/// An error of any crossdev operation: what went wrong, what is allowed, and a stable [`ErrorCode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrossDeviceError {
    /// Stable code to branch on.
    pub code: ErrorCode,
    /// Human-readable message (TensorFlow's text where it had one).
    pub message: String,
}

impl CrossDeviceError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        CrossDeviceError { code, message: message.into() }
    }
}

impl fmt::Display for CrossDeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for CrossDeviceError {}

/// Result of crossdev operations.
pub type Result<T> = std::result::Result<T, CrossDeviceError>;

/// Shorthand for `Err(CrossDeviceError::new(code, message))`.
pub(crate) fn fail<T>(code: ErrorCode, message: impl Into<String>) -> Result<T> {
    Err(CrossDeviceError::new(code, message))
}
