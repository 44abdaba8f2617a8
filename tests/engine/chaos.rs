//! The chaos suite, small: two `genq run` processes of the real binary on a private
//! Postgres cluster, SIGKILLed at random under a mixed load of generations (all three
//! dialects, webhook redelivery on) and plain jobs, with one crash restart of Postgres.
//! Asserts the invariants, not timings (`genq bench --scenario chaos` prints those).

use std::path::Path;

use genq::dev::bench::chaos::{self, ChaosArgs};
use genq::providers::ProviderKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_daemons_and_a_crashed_database_lose_nothing_and_pay_nothing_twice() {
    let args = ChaosArgs::small();
    let report = chaos::run(&args, Path::new(env!("CARGO_BIN_EXE_genq")))
        .await
        .expect("the chaos run itself");
    let printed = genq::dev::bench::chaos::render(&report);
    assert!(report.kills > 0, "{printed}");
    assert_eq!(report.pg_restarts, 1, "{printed}");
    assert!(
        report.recovery.is_some(),
        "not everything final within {:?} of the faults ending:\n{printed}",
        args.recovery_timeout
    );
    assert!(report.findings.violations.is_empty(), "{printed}");
    let generations: i64 = report.findings.generations.values().sum();
    assert_eq!(generations, args.generations as i64, "{printed}");
    for kind in ProviderKind::ALL {
        assert!(
            report.fake.created(kind) > 0,
            "{kind:?} exercised: {printed}"
        );
    }
    assert!(report.fake.webhooks_sent > 0, "{printed}");
}
