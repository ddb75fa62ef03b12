//! How values from several devices combine.

use crate::error::{fail, ErrorCode, Result};

/// A reduction across devices. TensorFlow had SUM and MEAN; crossdev adds MAX, MIN and PRODUCT
/// (SPEC Part A.4). MEAN is SUM followed by a divide by the number of contributions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Elementwise sum.
    Sum,
    /// Elementwise sum divided by the number of contributions (integers: truncated toward zero).
    Mean,
    /// Elementwise maximum; NaN wins.
    Max,
    /// Elementwise minimum; NaN wins.
    Min,
    /// Elementwise product.
    Product,
}

impl ReduceOp {
    /// Every op.
    pub const ALL: [ReduceOp; 5] =
        [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min, ReduceOp::Product];

    /// The public name (`"SUM"`, …).
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "SUM",
            ReduceOp::Mean => "MEAN",
            ReduceOp::Max => "MAX",
            ReduceOp::Min => "MIN",
            ReduceOp::Product => "PRODUCT",
        }
    }

    /// Parses a public name. Anything else gets `_simple_reduce`'s message (SPEC §5.3), extended
    /// with the ops crossdev accepts.
    pub fn parse(name: &str) -> Result<ReduceOp> {
        match ReduceOp::ALL.iter().find(|op| op.name() == name) {
            Some(op) => Ok(*op),
            None => fail(
                ErrorCode::InvalidReduceOp,
                format!(
                    "`aggregation` must be VariableAggregation.SUM or VariableAggregation.MEAN. \
                     (crossdev accepts ReduceOp {}; got {name:?})",
                    ReduceOp::ALL.map(|o| o.name()).join(", ")
                ),
            ),
        }
    }

    /// The op used to combine contributions: MEAN combines by summing.
    pub fn combiner(self) -> ReduceOp {
        match self {
            ReduceOp::Mean => ReduceOp::Sum,
            other => other,
        }
    }
}
