//! Logging: readable lines by default, one JSON object per line with `GENQ_LOG_FORMAT=json`
//! (for log shippers). The filter comes from `GENQ_LOG` or `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber with `default` as the filter unless `GENQ_LOG` or
/// `RUST_LOG` says otherwise. Safe to call more than once (later calls do nothing).
pub fn init(default: &str) {
    let filter = std::env::var("GENQ_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.into());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("GENQ_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
}
