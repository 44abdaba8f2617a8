//! What a job does when a domain fails: the conversions from the domains' errors into the
//! engine's [`JobError`]. They live on the jobs side because the engine knows no domain
//! (issue 12): storage, providers and credits never name the daemon, and the daemon only
//! converts its own and the database's errors. Each conversion keeps what the domain said:
//! a permanent error discards the job, a retryable one keeps the domain's Retry-After, and
//! a lost database connection inside interrupts the attempt.

use crate::credits::CreditError;
use crate::daemon::JobError;
use crate::providers::ProviderError;
use crate::storage::StorageError;

/// A store's verdict: retry (after the store's delay, if it gave one) or discard.
impl From<StorageError> for JobError {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::Retryable {
                message,
                retry_after: Some(after),
            } => JobError::retry_after(message, after),
            StorageError::Retryable { message, .. } => JobError::retry(message),
            StorageError::Permanent { message } => JobError::permanent(message),
        }
    }
}

/// A provider's verdict: retry (after the provider's Retry-After when it gave one) or
/// discard. An ambiguous submit is a retry: the next attempt reconciles before sending
/// anything. The pipeline settles permanent errors and last attempts itself, so a
/// generation never stays open with its credits held after its job gave up.
impl From<ProviderError> for JobError {
    fn from(err: ProviderError) -> Self {
        match err {
            ProviderError::Retryable {
                message,
                retry_after: Some(after),
            } => JobError::retry_after(message, after),
            ProviderError::Retryable {
                message,
                retry_after: None,
            }
            | ProviderError::Ambiguous { message } => JobError::retry(message),
            ProviderError::Permanent { message } => JobError::permanent(message),
            // Refused for capacity, nothing created: wait without spending an attempt.
            ProviderError::Busy { retry_after, .. } => JobError::snooze(retry_after),
        }
    }
}

/// The credit API's verdict: its database errors as any database error (a lost connection
/// interrupts, anything else retries); refused input, an unknown generation or missing
/// credits cannot change by retrying, so they discard the job.
impl From<CreditError> for JobError {
    fn from(err: CreditError) -> Self {
        match err {
            CreditError::Database(e) => JobError::from(e),
            other => JobError::permanent(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn domain_errors_keep_permanence_and_retry_after() {
        let after = Some(Duration::from_secs(7));
        assert_eq!(
            JobError::from(StorageError::Retryable {
                message: "busy".into(),
                retry_after: after,
            }),
            JobError::retry_after("busy", Duration::from_secs(7))
        );
        assert_eq!(
            JobError::from(StorageError::permanent("bad key")),
            JobError::permanent("bad key")
        );
        assert_eq!(
            JobError::from(ProviderError::Retryable {
                message: "429".into(),
                retry_after: after,
            }),
            JobError::retry_after("429", Duration::from_secs(7))
        );
        assert_eq!(
            JobError::from(ProviderError::Ambiguous {
                message: "timeout".into()
            }),
            JobError::retry("timeout")
        );
        assert_eq!(
            JobError::from(ProviderError::permanent("422")),
            JobError::permanent("422")
        );
        assert!(matches!(
            JobError::from(CreditError::InvalidInput("key reused".into())),
            JobError::Permanent { .. }
        ));
        let lost = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(
            JobError::from(CreditError::Database(lost)),
            JobError::Interrupted { .. }
        ));
        assert!(matches!(
            JobError::from(CreditError::Database(sqlx::Error::RowNotFound)),
            JobError::Retry { after: None, .. }
        ));
    }
}
