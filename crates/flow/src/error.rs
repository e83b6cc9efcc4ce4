//! Why planning a run stopped early. The execution log keeps the message (`RunSummary::error`);
//! the variants say which kind of problem it was and where (the step's path and field).

/// A run's planning stopped at a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// An expression or template failed to evaluate.
    #[error("step {path} {field}: {message}")]
    Expression {
        path: String,
        field: String,
        message: String,
    },
    /// A required value rendered empty.
    #[error("step {path} {field}: rendered empty")]
    Empty { path: String, field: String },
    /// A value rendered to the wrong shape.
    #[error("step {path} {field}: expected {expected}, got {got}")]
    Shape {
        path: String,
        field: String,
        expected: &'static str,
        got: String,
    },
    /// A value that renders but does not say what the step needs.
    #[error("step {path} {field}: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
    /// The step cannot run here.
    #[error("step {path}: {message}")]
    Step { path: String, message: String },
    /// The workflow's `when` failed to evaluate.
    #[error("when: {0}")]
    When(String),
}

impl PlanError {
    pub(crate) fn invalid(path: &str, field: &str, message: impl Into<String>) -> PlanError {
        PlanError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn step(path: &str, message: impl Into<String>) -> PlanError {
        PlanError::Step {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}
