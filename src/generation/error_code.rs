//! Why a generation failed, as a machine code (`genq.generations.error_code`). The reason
//! text next to it (`error`) is for operators: it names provider codes and our
//! configuration. Users and their browsers get the code and the fixed message
//! `genq.generation_error_message` gives for it (docs/generation.md lists both).

/// The machine code of a failed or cancelled generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The provider's content policy refused the input or the output.
    Moderation,
    /// The provider refused the request as invalid (400, 404 unknown model, 422).
    InvalidInput,
    /// The provider failed, kept failing, refused our credentials, or the outcome of the
    /// submit could not be known.
    ProviderFailed,
    /// The render outlasted its limit, or the provider expired it.
    Timeout,
    /// Cancelled.
    Cancelled,
    /// The provider finished but its output could not be downloaded (hold captured).
    OutputUnfetchable,
    /// Our store refused the output (hold released).
    StorageFailed,
}

impl ErrorCode {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Moderation => "moderation",
            Self::InvalidInput => "invalid_input",
            Self::ProviderFailed => "provider_failed",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
            Self::OutputUnfetchable => "output_unfetchable",
            Self::StorageFailed => "storage_failed",
        }
    }

    /// The code of a provider's refusal of a request (a permanent error of a submit or a
    /// status read): moderation when the provider's own code says so (BytePlus
    /// `SensitiveContentDetected`, fal `content_policy_violation`, Replicate E005),
    /// invalid input for 400, 404 and 422, else a provider failure (401/403 are our keys).
    pub fn of_refusal(message: &str) -> Self {
        if is_moderation(message) {
            Self::Moderation
        } else if ["HTTP 400", "HTTP 404", "HTTP 422"]
            .iter()
            .any(|s| message.contains(s))
        {
            Self::InvalidInput
        } else {
            Self::ProviderFailed
        }
    }

    /// The code of a run the provider reported failed.
    pub fn of_failure(reason: &str) -> Self {
        if is_moderation(reason) {
            Self::Moderation
        } else {
            Self::ProviderFailed
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_moderation(text: &str) -> bool {
    [
        "moderation",
        "content_policy",
        "SensitiveContent",
        "(E005)",
        "E005:",
    ]
    .iter()
    .any(|marker| text.contains(marker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_classified_from_the_providers_codes() {
        for (message, code) in [
            (
                "byteplus submit: moderation: InputTextSensitiveContentDetected",
                ErrorCode::Moderation,
            ),
            (
                "fal submit: HTTP 422: content_policy_violation: flagged",
                ErrorCode::Moderation,
            ),
            (
                "replicate: The input or output was flagged as sensitive. (E005)",
                ErrorCode::Moderation,
            ),
            (
                "replicate submit: HTTP 422: invalid input",
                ErrorCode::InvalidInput,
            ),
            (
                "fal submit: HTTP 404: Application not found",
                ErrorCode::InvalidInput,
            ),
            (
                "fal submit: HTTP 401: unauthorized (set FAL_KEY)",
                ErrorCode::ProviderFailed,
            ),
        ] {
            assert_eq!(ErrorCode::of_refusal(message), code, "{message}");
        }
        assert_eq!(
            ErrorCode::of_failure("replicate: CUDA out of memory"),
            ErrorCode::ProviderFailed
        );
    }

    #[test]
    fn spellings_fit_the_column_check() {
        for code in [
            ErrorCode::Moderation,
            ErrorCode::InvalidInput,
            ErrorCode::ProviderFailed,
            ErrorCode::Timeout,
            ErrorCode::Cancelled,
            ErrorCode::OutputUnfetchable,
            ErrorCode::StorageFailed,
        ] {
            let s = code.as_str();
            assert!(s.len() <= 40 && s.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }
}
