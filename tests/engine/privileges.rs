//! Postgres privileges: what a login granted a database's genq roles can and cannot do.
//! The attacks of issue 11 (a trigger on the ledger fired by a SECURITY DEFINER function, a
//! login of one database calling another database's genq, out-of-range arguments), the
//! Supabase guide's grants, and the daemon itself running as a worker member.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::generation::GenEnv;
use crate::common::privileges::{
    admin, assert_denied, assert_invariants, connect, drop_database, fresh_database, is_superuser,
    login, refused, worker_login, OtherDb, Roles,
};
use crate::common::{wait_until, TestDb};

/// The attack: a temporary trigger function that makes its caller superuser, on the ledger.
fn evil_trigger(login: &str) -> String {
    format!(
        "CREATE FUNCTION pg_temp.evil() RETURNS trigger LANGUAGE plpgsql AS $f$
         BEGIN EXECUTE 'ALTER ROLE {login} SUPERUSER'; RETURN NEW; END $f$;
         CREATE TRIGGER evil BEFORE INSERT ON genq.ledger
             FOR EACH ROW EXECUTE FUNCTION pg_temp.evil();"
    )
}

#[sqlx::test(migrations = false)]
async fn worker_and_backend_members_cannot_plant_a_trigger_to_become_superuser(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let roles = Roles::of(&db);
    for group in [roles.worker(), roles.backend()] {
        let name = format!("{group}_attacker");
        let mut conn = connect(&login(&db, &name, Some(&group), "").await).await;
        assert_eq!(
            refused(&mut conn, &evil_trigger(&name)).await,
            "42501",
            "{group}"
        );
        sqlx::query("SELECT genq.grant_credits('u1', 5, $1)")
            .bind(format!("attack:{group}"))
            .execute(&mut conn)
            .await
            .expect("the grant itself is allowed");
        assert!(
            !is_superuser(&db, &name).await,
            "{group} member became superuser"
        );
    }
    assert_invariants(&db).await;
}

#[sqlx::test(migrations = false)]
async fn a_trigger_granted_by_mistake_still_runs_without_superuser_rights(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let roles = Roles::of(&db);
    let name = format!("{}_mistake", roles.prefix);
    let options = login(&db, &name, Some(&roles.worker()), "").await;
    // A future grant mistake: TRIGGER on the ledger.
    admin(&db, &format!("GRANT TRIGGER ON genq.ledger TO {name}")).await;
    let mut conn = connect(&options).await;
    sqlx::raw_sql(&evil_trigger(&name))
        .execute(&mut conn)
        .await
        .expect("the mistaken grant lets the trigger in");
    // genq.grant_credits inserts into the ledger as the owner role, which may not ALTER ROLE.
    let code = refused(&mut conn, "SELECT genq.grant_credits('u1', 5, 'k1')").await;
    assert_eq!(code, "42501");
    assert!(!is_superuser(&db, &name).await);
    drop(conn);
    // The trigger went with its temporary function when the session ended.
    assert_invariants(&db).await;
}

#[sqlx::test(migrations = false)]
async fn no_genq_role_may_truncate_reference_or_trigger_any_table(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let roles = Roles::of(&db);
    let granted: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT r.role, c.relname, p.priv
           FROM unnest($1::text[]) AS r (role)
          CROSS JOIN pg_class c
          CROSS JOIN unnest(ARRAY['TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p (priv)
          WHERE c.relnamespace = 'genq'::regnamespace AND c.relkind IN ('r', 'p', 'v')
            AND has_table_privilege(r.role, c.oid, p.priv)",
    )
    .bind(vec![roles.worker(), roles.backend()])
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(granted.is_empty(), "{granted:?}");

    for group in [roles.worker(), roles.backend()] {
        let name = format!("{group}_vandal");
        let options = login(&db, &name, Some(&group), "").await;
        // A schema of its own, where it may create tables.
        admin(
            &db,
            &format!("CREATE SCHEMA IF NOT EXISTS {name} AUTHORIZATION {name}"),
        )
        .await;
        let mut conn = connect(&options).await;
        let pin = format!("CREATE TABLE {name}.pin (id bigint REFERENCES genq.jobs (id))");
        let statements = [
            "TRUNCATE genq.ledger",
            "TRUNCATE genq.jobs",
            pin.as_str(),
            "CREATE TRIGGER t AFTER INSERT ON genq.jobs FOR EACH ROW EXECUTE FUNCTION genq.generations_touch()",
            "CREATE TABLE genq.extra (id int)",
        ];
        assert_denied(&mut conn, &statements, &group).await;
    }
    assert_invariants(&db).await;
}

#[sqlx::test(migrations = false)]
async fn every_object_belongs_to_a_nologin_non_superuser_owner_and_definers_pin_search_path(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let roles = Roles::of(&db);
    let owner: (bool, bool, bool, bool) = sqlx::query_as(
        "SELECT rolsuper, rolcanlogin, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = $1",
    )
    .bind(roles.owner())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(owner, (false, false, false, false));
    let foreign: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE relnamespace = 'genq'::regnamespace
            AND relowner <> $1::regrole
         UNION ALL
         SELECT oid::regprocedure::text FROM pg_proc WHERE pronamespace = 'genq'::regnamespace
            AND proowner <> $1::regrole",
    )
    .bind(roles.owner())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        foreign.is_empty(),
        "not owned by {}: {foreign:?}",
        roles.owner()
    );
    let unpinned: Vec<String> = sqlx::query_scalar(
        "SELECT oid::regprocedure::text FROM pg_proc
          WHERE pronamespace = 'genq'::regnamespace AND prosecdef
            AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (proconfig), false)",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(unpinned.is_empty(), "{unpinned:?}");
}

#[sqlx::test(migrations = false)]
async fn a_login_of_one_database_cannot_act_on_another_databases_genq(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let roles = Roles::of(&db);
    let other = OtherDb::create(&db).await;
    for group in [roles.backend(), roles.worker()] {
        let name = format!("{group}_abroad");
        let options = login(&db, &name, Some(&group), "").await;
        let mut home = connect(&options).await;
        sqlx::query("SELECT genq.grant_credits('u1', 5, $1)")
            .bind(format!("home:{group}"))
            .execute(&mut home)
            .await
            .expect("allowed in its own database");
        let mut abroad = connect(&options.clone().database(&other.name)).await;
        let statements = [
            "SELECT genq.grant_credits('u1', 5, 'abroad')",
            "SELECT genq.enqueue('noop')",
            "SELECT * FROM genq.credit_balance('u1')",
            "SELECT count(*) FROM genq.generations",
        ];
        assert_denied(&mut abroad, &statements, &format!("{group} in B")).await;
        assert!(!is_superuser(&db, &name).await);
    }
    // B may not take A's roles: `genq migrate` is refused, naming the setting to change.
    let mut url = url::Url::parse(&db.url().await).unwrap();
    url.set_path(&format!("/{}", other.name));
    let out = crate::common::genq_command(url.as_str())
        .env("GENQ_DATABASE_ROLE_PREFIX", &roles.prefix)
        .arg("migrate")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("serves the genq of database") && stderr.contains("database.role_prefix"),
        "{stderr}"
    );
    let ledger_b: i64 = {
        let mut conn = connect(&other.options).await;
        sqlx::query_scalar("SELECT count(*) FROM genq.ledger")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(ledger_b, 0);
    other.drop(&db).await;
    assert_invariants(&db).await;
}

#[sqlx::test(migrations = false)]
async fn objects_a_later_migration_creates_are_secured_by_the_next_migrate(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let roles = Roles::of(&db);
    // What a later migration does, as the migrating role.
    admin(
        &db,
        "CREATE TABLE genq.later (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);
         CREATE FUNCTION genq.later_fn() RETURNS int LANGUAGE sql SECURITY DEFINER
             SET search_path = pg_catalog, pg_temp AS 'SELECT 1';",
    )
    .await;
    genq::db::migrate(&db.options, "").await.expect("migrate");
    let (table_owner, fn_owner, dml, trigger, public_exec): (String, String, bool, bool, bool) =
        sqlx::query_as(
            "SELECT pg_get_userbyid(c.relowner)::text,
                    (SELECT pg_get_userbyid(proowner)::text FROM pg_proc WHERE proname = 'later_fn'),
                    has_table_privilege($1, 'genq.later', 'SELECT, INSERT, UPDATE, DELETE'),
                    has_table_privilege($1, 'genq.later', 'TRIGGER'),
                    has_function_privilege('public', 'genq.later_fn()', 'EXECUTE')
               FROM pg_class c WHERE c.oid = 'genq.later'::regclass",
        )
        .bind(roles.worker())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(table_owner, roles.owner());
    assert_eq!(fn_owner, roles.owner());
    assert!(dml && !trigger && !public_exec);
}

/// The SQL block README gives for Supabase, with `service_role` replaced by `role`.
fn readme_supabase_grants(role: &str) -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("-- genq: Supabase grants")
        .expect("README has the Supabase grants block");
    let block = &readme[start..];
    let end = block.find("```").expect("the block ends");
    block[..end].replace("service_role", role)
}

#[sqlx::test(migrations = false)]
async fn a_noinherit_role_granted_as_the_supabase_guide_says_performs_each_documented_call(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let roles = Roles::of(&db);
    let name = format!("{}_service", roles.prefix);
    let options = login(&db, &name, None, "NOINHERIT").await;
    admin(&db, &readme_supabase_grants(&name)).await;
    // Grants made to other roles survive later migrations.
    genq::db::migrate(&db.options, "")
        .await
        .expect("migrate again");
    let mut conn = connect(&options).await;
    let calls = [
        "SELECT genq.enqueue('noop', '{}'::jsonb)",
        r#"SELECT genq.enqueue_many('[{"kind": "noop"}]')"#,
        "SELECT genq.enqueue_many(ARRAY['noop'], NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        "SELECT genq.grant_credits('u1', 100, 'pay:1')",
        "SELECT * FROM genq.credit_balance('u1')",
        "SELECT genq.enqueue_generation('u1', 'fal', 'm', '{\"prompt\": \"x\"}', 10, 'req:1')",
        "SELECT genq.cancel_generation((SELECT id FROM genq.generations WHERE idempotency_key = 'req:1'))",
        "SELECT genq.enqueue_generation('u1', 'fal', 'm', '{\"prompt\": \"y\"}', 10, 'req:2')",
        "SELECT genq.delete_generation((SELECT id FROM genq.generations WHERE idempotency_key = 'req:2'))",
        "SELECT genq.get_generation((SELECT id FROM genq.generations WHERE idempotency_key = 'req:1'))",
        "SELECT * FROM genq.list_generations('u1', 10)",
        "SELECT genq.recreate_generation((SELECT id FROM genq.generations WHERE idempotency_key = 'req:1'), 'req:3')",
        "SELECT genq.record_invoice('txn1', 'order1', 'u1', 50)",
        "SELECT genq.register_blob('u1', 'reference', 'local', 'uploads/u1/a.png')",
        "SELECT genq.request_export('u1')",
        "SELECT genq.request_erasure('u2')",
        "SELECT count(*) FROM genq.generations",
        "SELECT count(*) FROM genq.payments",
        "SELECT count(*) FROM genq.blobs",
        "SELECT count(*) FROM genq.erasure_requests",
        "SELECT count(*) FROM genq.export_requests",
    ];
    for sql in calls {
        sqlx::raw_sql(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{name} (NOINHERIT): {sql}: {e}"));
    }
    // Nothing beyond the guide: no ledger, no worker functions.
    let statements = [
        "SELECT count(*) FROM genq.ledger",
        "SELECT genq.capture_hold(gen_random_uuid())",
    ];
    assert_denied(&mut conn, &statements, &name).await;
    assert_invariants(&db).await;
}

#[sqlx::test(migrations = false)]
async fn the_pipeline_and_retention_run_with_the_daemon_logged_in_as_a_worker_member(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let mut env = GenEnv::new(TestDb::new(po, co).await, Duration::from_millis(300)).await;
    env.config.metrics.sample_interval = Duration::from_millis(200);
    let roles = Roles::of(&env.db);
    let worker = worker_login(&env.db).await;
    let backend = login(
        &env.db,
        &format!("{}_app", roles.prefix),
        Some(&roles.backend()),
        "",
    )
    .await;
    let mut app = connect(&backend).await;
    sqlx::raw_sql("SELECT genq.grant_credits('u1', 100, 'pay:1')")
        .execute(&mut app)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for provider in ["fal", "byteplus", "replicate"] {
        let id: uuid::Uuid = sqlx::query_scalar(
            "SELECT genq.enqueue_generation('u1', $1, $2, '{\"prompt\": \"fox\"}', 10, $1)",
        )
        .bind(provider)
        .bind(crate::common::generation::model_for(provider))
        .fetch_one(&mut app)
        .await
        .unwrap();
        ids.push(id);
    }
    let daemon = env.daemon_with_retention_as(worker);
    for id in &ids {
        let g = env.wait_final(*id, Duration::from_secs(30)).await;
        env.assert_output_stored(&g);
    }
    // The user exports their data, deletes one result, then their account: the worker
    // writes the archive, deletes and erases.
    sqlx::raw_sql("SELECT genq.request_export('u1')")
        .execute(&mut app)
        .await
        .unwrap();
    wait_until(Duration::from_secs(30), "the export", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT bool_and(completed_at IS NOT NULL) FROM genq.export_requests",
        )
        .fetch_one(&env.db.pool)
        .await
        .unwrap()
    })
    .await;
    sqlx::query("SELECT genq.delete_generation($1)")
        .bind(ids[0])
        .execute(&mut app)
        .await
        .unwrap();
    sqlx::raw_sql("SELECT genq.request_erasure('u1')")
        .execute(&mut app)
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(30),
        "the erasure to complete",
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT bool_and(completed_at IS NOT NULL) FROM genq.erasure_requests",
            )
            .fetch_one(&env.db.pool)
            .await
            .unwrap()
        },
    )
    .await;
    let failed_jobs: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, errors::text FROM genq.jobs WHERE errors <> '[]'::jsonb")
            .fetch_all(&env.db.pool)
            .await
            .unwrap();
    assert!(
        failed_jobs.is_empty(),
        "jobs that hit errors as the worker: {failed_jobs:#?}"
    );
    let sampled: bool = sqlx::query_scalar("SELECT sampled_at > '-infinity' FROM genq.stats_meta")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert!(sampled, "the worker's statistics sampler ran");
    daemon.shutdown().await;
    assert_invariants(&env.db).await;
}

#[sqlx::test(migrations = false)]
async fn a_createrole_migrator_without_superuser_migrates_like_supabases_postgres(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let roles = Roles::of(&db);
    let migrator = format!("{}_migrator", roles.prefix);
    let options = login(&db, &migrator, None, "CREATEROLE").await;
    let other = fresh_database(&db, "c", Some(&migrator)).await;
    let target = options.database(&other);
    genq::db::migrate(&target, &other)
        .await
        .expect("a CREATEROLE database owner may migrate");
    genq::db::migrate(&target, "").await.expect("and again");
    let mut conn = connect(&target).await;
    let (owner_super, definers_elsewhere): (bool, i64) = sqlx::query_as(
        "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = $1),
                (SELECT count(*) FROM pg_proc WHERE pronamespace = 'genq'::regnamespace
                    AND proowner <> $1::regrole)",
    )
    .bind(format!("{other}_owner"))
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(!owner_super);
    assert_eq!(definers_elsewhere, 0);
    sqlx::raw_sql("SELECT genq.grant_credits('u1', 5, 'k1')")
        .execute(&mut conn)
        .await
        .expect("the migrator, a member of the owner role, may call the API");
    drop(conn);
    drop_database(&db, &other).await;
}

#[sqlx::test(migrations = false)]
async fn an_installation_migrated_before_0011_is_fixed_by_the_next_migrate(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    // An existing installation: the migrations before 0011, as the old binary ran them.
    let old = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < "0011" {
            std::fs::copy(&path, old.path().join(&name)).unwrap();
        }
    }
    let mut conn = connect(&co).await;
    sqlx::raw_sql("CREATE SCHEMA genq; SET search_path TO genq")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(old.path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .expect("the old migrations");
    sqlx::raw_sql(
        "SELECT genq.grant_credits('u1', 100, 'pay:1');
         SELECT genq.enqueue_generation('u1', 'fal', 'm', '{}', 30, 'req:1');",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let worker_may_trigger = "SELECT has_table_privilege('genq_worker', 'genq.ledger', 'TRIGGER')";
    let before: bool = sqlx::query_scalar(worker_may_trigger)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(before, "0003 granted genq_worker ALL");
    drop(conn);

    let db = TestDb::new(po, co).await; // genq migrate, with this database's prefix
    let roles = Roles::of(&db);
    let after: bool = sqlx::query_scalar(worker_may_trigger)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        !after,
        "0003's genq_worker keeps nothing in a database with other roles"
    );
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT pg_get_userbyid(proowner)::text FROM pg_proc
          WHERE pronamespace = 'genq'::regnamespace AND prosecdef",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(owners, vec![roles.owner()]);
    let balance: (i64, i64) = sqlx::query_as("SELECT * FROM genq.credit_balance('u1')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(balance, (70, 30), "the data survived");
    assert_invariants(&db).await;
}

#[sqlx::test(migrations = false)]
async fn a_migrator_that_may_not_create_roles_is_told_what_a_superuser_must_run(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let roles = Roles::of(&db);
    let migrator = format!("{}_plain", roles.prefix);
    let options = login(&db, &migrator, None, "NOCREATEROLE").await;
    let other = fresh_database(&db, "d", Some(&migrator)).await;
    let target = options.database(&other);
    let err = genq::db::migrate(&target, &other)
        .await
        .expect_err("it may not create the roles");
    assert!(format!("{err}").contains("may not create roles"), "{err}");
    // What the messages ask a superuser to do; then the migration goes through.
    let mut setup = String::new();
    for kind in ["owner", "backend", "worker"] {
        setup.push_str(&format!(
            "DO $$ BEGIN CREATE ROLE {other}_{kind} NOLOGIN;
             EXCEPTION WHEN duplicate_object THEN NULL; END $$;
             COMMENT ON ROLE {other}_{kind} IS 'genq: roles of database {other}';"
        ));
    }
    setup.push_str(&format!("GRANT {other}_owner TO {migrator};"));
    admin(&db, &setup).await;
    genq::db::migrate(&target, &other)
        .await
        .expect("migrates once the roles exist");
    drop_database(&db, &other).await;
}
