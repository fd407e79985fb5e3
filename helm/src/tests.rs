#![allow(clippy::unwrap_used)]

use super::*;

/// An AWS cluster's values as an operator keeps them: comments, a secret
/// for the password, RDS instead of the bundled server.
const AWS: &str = r#"# Values for the production cluster (us-east-1).
# Edited by hand: keep the comments.

deployTarget: AMAZON

global:
  postgresql:
    # the user pachd and dex connect as
    postgresqlUsername: "pachyderm"
    # the password lives in a secret, see below
    postgresqlPassword: ""
    postgresqlExistingSecretName: "pg-credentials"
    postgresqlExistingSecretKey: "password"
    postgresqlDatabase: "pachyderm"   # the main database
    # RDS endpoint
    postgresqlHost: "prod-db.abc123.us-east-1.rds.amazonaws.com"
    postgresqlPort: "5432"
    postgresqlSSL: "require"
    identityDatabaseFullNameOverride: "dex"
  imagePullSecrets: []

pachd:
  storage:
    backend: AMAZON
    amazon:
      # the bucket holding the chunks
      bucket: prod-pach-data
      region: us-east-1
      id: AKIAEXAMPLEKEYID
      secret: example/secret/key
  serviceAccount:
    additionalAnnotations:
      eks.amazonaws.com/role-arn: arn:aws:iam::123456789012:role/pachd

postgresql:
  # RDS is used instead of the bundled server
  enabled: false
"#;

/// Like the chart's minimal AWS example: no `global` at all, no newline at the end.
const AWS_MINIMAL: &str = "# minimal AWS values\n\npachd:\n  storage:\n    backend: AMAZON\n    amazon:\n      bucket: blah\n      cloudFrontDistribution: cfd-123\n  serviceAccount:\n    additionalAnnotations:\n      eks.amazonaws.com/role-arn: blah123\n\nworker:\n  serviceAccount:\n    additionalAnnotations:\n      eks.amazonaws.com/role-arn: blah123";

const MINIO: &str = r#"deployTarget: CUSTOM

pachd:
  storage:
    backend: MINIO
    minio:
      bucket: "foo"   # created by the minio chart
      endpoint: "minio.storage.svc:9000"
      id: "baz"
      secret: "quux"
      secure: "false"
"#;

const GOOGLE: &str = r#"deployTarget: GOOGLE

pachd:
  storage:
    google:
      bucket: "fake-bucket"
      # or pass it with --set-file
      cred: |
        {"type": "service_account"}

  serviceAccount:
    additionalAnnotations:
      iam.gke.io/gcp-service-account: blah123
"#;

const MICROSOFT: &str = "deployTarget: MICROSOFT\n\npachd:\n  storage:\n    microsoft:\n      container: \"foo\"\n      id: \"bar\"\n      secret: \"baz\"\n\n";

const LOCAL: &str = "deployTarget: LOCAL\n\npachd:\n\nconsole:\n  config:\n    graphqlPort: 4000\n";

fn pg(host: &str, port: u16) -> PgTarget {
    PgTarget {
        host: host.into(),
        port,
        user: None,
        sslmode: None,
    }
}

fn bucket(scheme: &str, name: &str) -> BucketTarget {
    BucketTarget {
        scheme: scheme.into(),
        bucket: name.into(),
        endpoint: None,
    }
}

fn bucket_only(scheme: &str, name: &str) -> HelmTargets {
    HelmTargets {
        bucket: Some(bucket(scheme, name)),
        ..HelmTargets::default()
    }
}

fn everything() -> HelmTargets {
    HelmTargets {
        postgres: Some(PgTarget {
            host: "restore-db.internal".into(),
            port: 6543,
            user: None,
            sslmode: Some("verify-full".into()),
        }),
        pachyderm_database: Some("pachyderm_restored".into()),
        dex_database: Some("dex_restored".into()),
        bucket: Some(bucket("s3", "restored-bucket")),
    }
}

/// Rewrites, then checks what every rewrite must give: a second rewrite
/// changes nothing, and the result reads back with each change in place.
fn rewrite_checked(values: &str, targets: &HelmTargets) -> Rewritten {
    let out = rewrite(values, targets).unwrap();
    let again = rewrite(&out.text, targets).unwrap();
    assert_eq!(again.text, out.text, "not idempotent");
    assert!(
        again.changes.is_empty(),
        "second rewrite changed {:?}",
        again.changes
    );
    let doc = tree::parse(&out.text).unwrap();
    let root = doc.root.as_ref().unwrap();
    for change in &out.changes {
        let path: Vec<&str> = change.path.split('.').collect();
        assert_eq!(
            root.text_at(&path),
            Some(change.new.as_str()),
            "{}",
            change.path
        );
    }
    out
}

/// Lines only in `before` and lines only in `after` (a longest-common-subsequence diff).
fn diff<'a>(before: &'a str, after: &'a str) -> (Vec<&'a str>, Vec<&'a str>) {
    let (a, b): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut removed, mut added) = (0, 0, Vec::new(), Vec::new());
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            removed.push(a[i]);
            i += 1;
        } else {
            added.push(b[j]);
            j += 1;
        }
    }
    removed.extend(&a[i..]);
    added.extend(&b[j..]);
    (removed, added)
}

fn change(path: &str, old: Option<&str>, new: &str) -> Change {
    Change {
        path: path.into(),
        old: old.map(Into::into),
        new: new.into(),
    }
}

#[test]
fn aws_values_change_only_the_targeted_values() {
    let out = rewrite_checked(AWS, &everything());
    let expected = AWS
        .replace(
            r#"postgresqlHost: "prod-db.abc123.us-east-1.rds.amazonaws.com""#,
            r#"postgresqlHost: "restore-db.internal""#,
        )
        .replace(r#"postgresqlPort: "5432""#, r#"postgresqlPort: "6543""#)
        .replace(
            r#"postgresqlSSL: "require""#,
            r#"postgresqlSSL: "verify-full""#,
        )
        .replace(
            r#"postgresqlDatabase: "pachyderm"   # the main"#,
            r#"postgresqlDatabase: "pachyderm_restored"   # the main"#,
        )
        .replace(
            r#"identityDatabaseFullNameOverride: "dex""#,
            r#"identityDatabaseFullNameOverride: "dex_restored""#,
        )
        .replace("bucket: prod-pach-data", "bucket: restored-bucket");
    assert_eq!(out.text, expected);
    let (removed, added) = diff(AWS, &out.text);
    assert_eq!((removed.len(), added.len()), (6, 6));
    assert_eq!(
        out.changes,
        vec![
            change(
                "global.postgresql.postgresqlHost",
                Some("prod-db.abc123.us-east-1.rds.amazonaws.com"),
                "restore-db.internal"
            ),
            change("global.postgresql.postgresqlPort", Some("5432"), "6543"),
            change(
                "global.postgresql.postgresqlSSL",
                Some("require"),
                "verify-full"
            ),
            change(
                "global.postgresql.postgresqlDatabase",
                Some("pachyderm"),
                "pachyderm_restored"
            ),
            change(
                "global.postgresql.identityDatabaseFullNameOverride",
                Some("dex"),
                "dex_restored"
            ),
            change(
                "pachd.storage.amazon.bucket",
                Some("prod-pach-data"),
                "restored-bucket"
            ),
        ]
    );
    // The password comes from a secret; the bundled server is off.
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].contains("`pg-credentials`"),
        "{}",
        out.warnings[0]
    );
    assert!(out.warnings[0].contains("restore-db.internal:6543"));
}

#[test]
fn targets_equal_to_the_values_leave_the_text_alone() {
    let same = HelmTargets {
        postgres: Some(PgTarget {
            host: "prod-db.abc123.us-east-1.rds.amazonaws.com".into(),
            port: 5432,
            user: Some("pachyderm".into()),
            sslmode: Some("require".into()),
        }),
        pachyderm_database: Some("pachyderm".into()),
        dex_database: Some("dex".into()),
        bucket: Some(bucket("s3", "prod-pach-data")),
    };
    let out = rewrite(AWS, &same).unwrap();
    assert_eq!(out.text, AWS);
    assert!(out.changes.is_empty(), "{:?}", out.changes);
    for values in [AWS_MINIMAL, MINIO, GOOGLE, MICROSOFT, LOCAL] {
        let out = rewrite(values, &HelmTargets::default()).unwrap();
        assert_eq!(out.text, values);
        assert!(out.changes.is_empty() && out.warnings.is_empty());
    }
}

#[test]
fn missing_global_is_created_as_block_mappings_at_the_end() {
    let targets = HelmTargets {
        postgres: Some(PgTarget {
            user: Some("pachyderm".into()),
            ..pg("10.0.0.5", 5432)
        }),
        pachyderm_database: Some("pachyderm".into()),
        dex_database: Some("dex".into()),
        bucket: Some(bucket("s3", "blah-restored")),
    };
    let out = rewrite_checked(AWS_MINIMAL, &targets);
    let expected = AWS_MINIMAL.replace("bucket: blah\n", "bucket: blah-restored\n")
        + "\nglobal:\n  postgresql:\n    postgresqlHost: \"10.0.0.5\"\n    postgresqlPort: \"5432\"\n    postgresqlUsername: pachyderm\n    postgresqlDatabase: pachyderm\n    identityDatabaseFullNameOverride: dex\n";
    assert_eq!(out.text, expected);
    assert_eq!(out.changes.len(), 6);
    assert!(out.changes[..5].iter().all(|c| c.old.is_none()));
    // No password in the values; the bundled server is on by default.
    assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
    assert!(out.warnings[0].contains("no PostgreSQL password"));
    assert!(out.warnings[1].contains("`postgresql.enabled` is not set"));
}

#[test]
fn missing_key_goes_at_the_end_of_its_mapping_at_its_indentation() {
    let values = "global:\n  postgresql:\n    postgresqlHost: old-db   # RDS\n    # the port stays the default\n  imagePullSecrets: []\n";
    let targets = HelmTargets {
        postgres: Some(pg("new-db", 5433)),
        ..HelmTargets::default()
    };
    let out = rewrite_checked(values, &targets);
    assert_eq!(
        out.text,
        "global:\n  postgresql:\n    postgresqlHost: new-db   # RDS\n    postgresqlPort: \"5433\"\n    # the port stays the default\n  imagePullSecrets: []\n"
    );
    let (removed, added) = diff(values, &out.text);
    assert_eq!(removed, ["    postgresqlHost: old-db   # RDS"]);
    assert_eq!(
        added,
        [
            "    postgresqlHost: new-db   # RDS",
            "    postgresqlPort: \"5433\""
        ]
    );
}

#[test]
fn four_space_files_get_four_space_insertions() {
    let values =
        "pachd:\n    storage:\n        backend: MINIO\n        minio:\n            bucket: old\n";
    let targets = HelmTargets {
        postgres: Some(pg("db", 5432)),
        ..HelmTargets::default()
    };
    let out = rewrite_checked(values, &targets);
    assert_eq!(
        out.text,
        format!(
            "{values}global:\n    postgresql:\n        postgresqlHost: db\n        postgresqlPort: \"5432\"\n"
        )
    );
}

#[test]
fn null_parent_becomes_a_mapping() {
    let out = rewrite_checked(
        LOCAL,
        &HelmTargets {
            pachyderm_database: Some("pach".into()),
            ..HelmTargets::default()
        },
    );
    assert_eq!(
        out.text,
        format!("{LOCAL}global:\n  postgresql:\n    postgresqlDatabase: pach\n")
    );

    let values = "global: ~   # filled in by CI\nother: 1\n";
    let out = rewrite_checked(
        values,
        &HelmTargets {
            dex_database: Some("dex2".into()),
            ..HelmTargets::default()
        },
    );
    assert_eq!(
        out.text,
        "global:   # filled in by CI\n  postgresql:\n    identityDatabaseFullNameOverride: dex2\nother: 1\n"
    );
    let out = rewrite_checked(
        "global: null\n",
        &HelmTargets {
            dex_database: Some("dex2".into()),
            ..HelmTargets::default()
        },
    );
    assert_eq!(
        out.text,
        "global:\n  postgresql:\n    identityDatabaseFullNameOverride: dex2\n"
    );
}

#[test]
fn null_and_empty_values_are_filled_in() {
    let values = "global:\n  postgresql:\n    postgresqlHost:\n    postgresqlPort: ~\n    postgresqlDatabase: \"\"\n";
    let targets = HelmTargets {
        postgres: Some(pg("db.internal", 5432)),
        pachyderm_database: Some("pachyderm".into()),
        ..HelmTargets::default()
    };
    let out = rewrite_checked(values, &targets);
    assert_eq!(
        out.text,
        "global:\n  postgresql:\n    postgresqlHost: db.internal\n    postgresqlPort: \"5432\"\n    postgresqlDatabase: \"pachyderm\"\n"
    );
    assert_eq!(out.changes[0].old, None);
    assert_eq!(out.changes[1].old, None);
    assert_eq!(out.changes[2].old.as_deref(), Some(""));
}

#[test]
fn empty_and_comment_only_files_get_the_keys() {
    let targets = HelmTargets {
        dex_database: Some("dex".into()),
        ..HelmTargets::default()
    };
    assert_eq!(
        rewrite_checked("", &targets).text,
        "global:\n  postgresql:\n    identityDatabaseFullNameOverride: dex\n"
    );
    assert_eq!(
        rewrite_checked("# nothing yet\n", &targets).text,
        "# nothing yet\nglobal:\n  postgresql:\n    identityDatabaseFullNameOverride: dex\n"
    );
}

#[test]
fn minio_bucket_and_endpoint() {
    let targets = HelmTargets {
        bucket: Some(BucketTarget {
            endpoint: Some("http://minio.restore.svc:9000/".into()),
            ..bucket("s3", "restored")
        }),
        ..HelmTargets::default()
    };
    let out = rewrite_checked(MINIO, &targets);
    assert_eq!(
        out.text,
        MINIO
            .replace(r#"bucket: "foo""#, r#"bucket: "restored""#)
            .replace("minio.storage.svc:9000", "minio.restore.svc:9000")
    );
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);

    // https where the values say insecure: a warning, `secure` untouched.
    let targets = HelmTargets {
        bucket: Some(BucketTarget {
            endpoint: Some("https://minio.restore.svc".into()),
            ..bucket("s3", "restored")
        }),
        ..HelmTargets::default()
    };
    let out = rewrite_checked(MINIO, &targets);
    assert!(out.text.contains("      secure: \"false\"\n"));
    assert!(
        out.warnings[0].contains("`pachd.storage.minio.secure` to \"true\""),
        "{:?}",
        out.warnings
    );

    // No endpoint key yet: inserted in the minio section.
    let values = "pachd:\n  storage:\n    backend: MINIO\n    minio:\n      bucket: foo\n      secure: \"true\"\n  replicas: 1\n";
    let out = rewrite_checked(values, &targets);
    assert_eq!(
        out.text,
        "pachd:\n  storage:\n    backend: MINIO\n    minio:\n      bucket: restored\n      secure: \"true\"\n      endpoint: minio.restore.svc\n  replicas: 1\n"
    );
}

#[test]
fn amazon_endpoint_goes_to_custom_endpoint() {
    let targets = HelmTargets {
        bucket: Some(BucketTarget {
            endpoint: Some("https://s3.restore.example:9000".into()),
            ..bucket("s3", "restored")
        }),
        ..HelmTargets::default()
    };
    let out = rewrite_checked(AWS_MINIMAL, &targets);
    assert!(out.text.contains(
        "      bucket: restored\n      cloudFrontDistribution: cfd-123\n      customEndpoint: https://s3.restore.example:9000\n"
    ));
}

#[test]
fn google_bucket_next_to_a_block_scalar() {
    let out = rewrite_checked(GOOGLE, &bucket_only("gs", "restored-gcs"));
    assert_eq!(
        out.text,
        GOOGLE.replace("\"fake-bucket\"", "\"restored-gcs\"")
    );

    // The bucket missing: it goes after the credentials and the blank line
    // that ends them, not into them.
    let values = GOOGLE.replace("      bucket: \"fake-bucket\"\n", "");
    let out = rewrite_checked(&values, &bucket_only("gs", "restored-gcs"));
    assert_eq!(
        out.text,
        values.replace(
            "{\"type\": \"service_account\"}\n\n",
            "{\"type\": \"service_account\"}\n\n      bucket: restored-gcs\n"
        )
    );
    let doc = tree::parse(&out.text).unwrap();
    let root = doc.root.unwrap();
    assert_eq!(
        root.text_at(&["pachd", "storage", "google", "cred"]),
        Some("{\"type\": \"service_account\"}\n")
    );
}

#[test]
fn microsoft_container() {
    let out = rewrite_checked(MICROSOFT, &bucket_only("az", "restored"));
    assert_eq!(
        out.text,
        MICROSOFT.replace("container: \"foo\"", "container: \"restored\"")
    );
    assert_eq!(
        out.changes,
        vec![change(
            "pachd.storage.microsoft.container",
            Some("foo"),
            "restored"
        )]
    );
}

#[test]
fn bucket_scheme_must_fit_the_backend() {
    let err = rewrite(GOOGLE, &bucket_only("s3", "x")).unwrap_err();
    assert!(matches!(err, HelmError::BackendMismatch { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("GOOGLE") && message.contains("`deployTarget`, line 1"),
        "{message}"
    );
    assert!(message.contains("set `pachd.storage.backend`"), "{message}");

    let err = rewrite(LOCAL, &bucket_only("s3", "x")).unwrap_err();
    assert!(matches!(err, HelmError::BackendMismatch { .. }), "{err}");
    let err = rewrite(AWS, &bucket_only("ftp", "x")).unwrap_err();
    assert!(matches!(err, HelmError::UnknownScheme { .. }), "{err}");
    let err = rewrite(
        "pachd:\n  storage:\n    backend: S3\n",
        &bucket_only("s3", "x"),
    )
    .unwrap_err();
    assert!(
        matches!(err, HelmError::UnknownBackend { line: 3, .. }),
        "{err}"
    );
}

#[test]
fn backend_guessed_from_the_one_section_or_refused() {
    let values = "pachd:\n  storage:\n    minio:\n      bucket: old\n";
    let out = rewrite_checked(values, &bucket_only("s3", "new"));
    assert_eq!(
        out.text,
        "pachd:\n  storage:\n    minio:\n      bucket: new\n"
    );
    assert!(out.warnings[0].contains("taking MINIO from the `pachd.storage.minio` section"));

    // A copy of the chart's defaults: every section there, one bucket named.
    let values = "pachd:\n  storage:\n    backend: \"\"\n    amazon:\n      bucket: \"\"\n    google:\n      bucket: \"gcs-old\"\n    microsoft:\n      container: \"\"\n    minio:\n      bucket: \"\"\n";
    let out = rewrite_checked(values, &bucket_only("gs", "gcs-new"));
    assert!(out.text.contains("bucket: \"gcs-new\""));

    let values = "pachd:\n  storage:\n    amazon:\n      bucket: a\n    minio:\n      bucket: b\n";
    let err = rewrite(values, &bucket_only("s3", "new")).unwrap_err();
    assert!(matches!(err, HelmError::AmbiguousBackend { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("`pachd.storage.amazon`, `pachd.storage.minio`"),
        "{err}"
    );

    let err = rewrite("pachd:\n  replicas: 1\n", &bucket_only("s3", "new")).unwrap_err();
    assert!(matches!(err, HelmError::AmbiguousBackend { .. }), "{err}");
}

#[test]
fn storage_url_keeps_its_scheme_and_query() {
    let values = "deployTarget: AMAZON\npachd:\n  storage:\n    storageURL: s3://blah?region=us-east-1\n    amazon:\n      bucket: blah\n";
    let out = rewrite_checked(values, &bucket_only("s3", "restored"));
    assert_eq!(
        out.text,
        "deployTarget: AMAZON\npachd:\n  storage:\n    storageURL: s3://restored?region=us-east-1\n    amazon:\n      bucket: restored\n"
    );
    assert!(out.warnings[0].contains("its query"), "{:?}", out.warnings);

    let values = "deployTarget: CUSTOM\npachd:\n  storage:\n    storageURL: \"gs://old\"\n";
    let out = rewrite_checked(values, &bucket_only("gs", "new"));
    assert!(out.text.contains("storageURL: \"gs://new\""));
    let err = rewrite(values, &bucket_only("s3", "new")).unwrap_err();
    assert!(
        matches!(err, HelmError::StorageUrl { line: 4, .. }),
        "{err}"
    );
}

#[test]
fn odd_values_are_quoted_and_read_back() {
    let targets = HelmTargets {
        postgres: Some(PgTarget {
            host: "db host: #1".into(),
            port: 1,
            user: Some("yes".into()),
            sslmode: Some("on".into()),
        }),
        pachyderm_database: Some("we\"ird\\db\n".into()),
        dex_database: Some("-dex".into()),
        bucket: None,
    };
    let out = rewrite_checked("global:\n  postgresql:\n    postgresqlHost: x\n", &targets);
    assert_eq!(
        out.text,
        "global:\n  postgresql:\n    postgresqlHost: \"db host: #1\"\n    postgresqlPort: \"1\"\n    postgresqlUsername: \"yes\"\n    postgresqlSSL: \"on\"\n    postgresqlDatabase: \"we\\\"ird\\\\db\\n\"\n    identityDatabaseFullNameOverride: \"-dex\"\n"
    );

    // A single-quoted value stays single-quoted.
    let out = rewrite_checked(
        "global:\n  postgresql:\n    postgresqlDatabase: 'old'\n",
        &HelmTargets {
            pachyderm_database: Some("it's".into()),
            ..HelmTargets::default()
        },
    );
    assert_eq!(
        out.text,
        "global:\n  postgresql:\n    postgresqlDatabase: 'it''s'\n"
    );

    for (value, quoted) in [
        ("pachyderm", false),
        ("db.example.com", false),
        ("NULL", true),
        ("Off", true),
        ("5432", true),
        ("1e3", true),
        (".inf", true),
        ("", true),
        ("a b", true),
        ("café", true),
    ] {
        assert_eq!(splice::needs_quotes(value), quoted, "{value:?}");
    }
}

#[test]
fn ports_are_always_quoted_and_tags_kept() {
    let values = "global:\n  postgresql:\n    postgresqlPort: 5432\n";
    let out = rewrite_checked(
        values,
        &HelmTargets {
            postgres: Some(pg("db", 6432)),
            ..HelmTargets::default()
        },
    );
    assert!(out.text.contains("    postgresqlPort: \"6432\"\n"));

    let values = "global:\n  postgresql:\n    postgresqlPort: !!str 5432\n";
    let out = rewrite_checked(
        values,
        &HelmTargets {
            postgres: Some(pg("db", 6432)),
            ..HelmTargets::default()
        },
    );
    assert!(
        out.text.contains("    postgresqlPort: !!str \"6432\"\n"),
        "{}",
        out.text
    );
}

#[test]
fn flow_mappings_are_refused() {
    let targets = HelmTargets {
        postgres: Some(pg("db", 5432)),
        ..HelmTargets::default()
    };
    let err = rewrite("global: {postgresql: {postgresqlHost: old}}\n", &targets).unwrap_err();
    match &err {
        HelmError::FlowMapping {
            path,
            mapping,
            line,
        } => {
            assert_eq!(
                (path.as_str(), mapping.as_str(), *line),
                ("global.postgresql.postgresqlHost", "global", 1)
            );
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("block mapping"), "{err}");

    let err = rewrite("global:\n  postgresql: {}\n", &targets).unwrap_err();
    assert!(
        matches!(err, HelmError::FlowMapping { line: 2, .. }),
        "{err}"
    );
}

#[test]
fn other_unsafe_shapes_are_refused() {
    let targets = HelmTargets {
        postgres: Some(pg("db", 5432)),
        ..HelmTargets::default()
    };
    let refused = |values: &str| rewrite(values, &targets).unwrap_err();

    let err = refused("global:\n  postgresql:\n    postgresqlHost: |\n      old\n");
    assert!(
        matches!(&err, HelmError::Unsupported { line: 3, reason, .. } if reason.contains("block scalar")),
        "{err}"
    );
    let err = refused("global:\n  postgresql:\n    postgresqlHost: &h old\n    other: *h\n");
    assert!(
        matches!(&err, HelmError::Unsupported { reason, .. } if reason.contains("anchor")),
        "{err}"
    );
    let err = refused("global:\n  postgresql:\n    postgresqlHost: \"old\n      host\"\n");
    assert!(
        matches!(&err, HelmError::Unsupported { reason, .. } if reason.contains("several lines")),
        "{err}"
    );
    let err = refused("global:\n  postgresql:\n    - postgresqlHost: old\n");
    assert!(
        matches!(&err, HelmError::NotAMapping { parent, .. } if parent == "global.postgresql"),
        "{err}"
    );
    let err = refused("global: defaults\n");
    assert!(
        matches!(err, HelmError::NotAMapping { line: 1, .. }),
        "{err}"
    );
    let err = refused(
        "global:\n  postgresql:\n    postgresqlHost: a\n  postgresql:\n    postgresqlHost: b\n",
    );
    assert!(
        matches!(
            err,
            HelmError::DuplicateKey {
                first: 2,
                second: 4,
                ..
            }
        ),
        "{err}"
    );
    let err = refused("a: 1\n---\nb: 2\n");
    assert!(matches!(err, HelmError::MultiDocument { line: 2 }), "{err}");
    let err = refused("global:\n  postgresql: [\n");
    assert!(matches!(err, HelmError::Parse { .. }), "{err}");
    let err = rewrite(
        "",
        &HelmTargets {
            postgres: Some(pg(" ", 1)),
            ..HelmTargets::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, HelmError::InvalidTarget { .. }), "{err}");
}

#[test]
fn password_and_bundled_server_warnings() {
    let targets = HelmTargets {
        postgres: Some(pg("db", 5432)),
        ..HelmTargets::default()
    };
    let values = "global:\n  postgresql:\n    postgresqlPassword: \"s3cret-value\"\npostgresql:\n  enabled: true\n";
    let out = rewrite_checked(values, &targets);
    assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
    assert!(
        out.warnings[0].contains("postgresqlPassword")
            && out.warnings[0].contains("`pachyderm` on db:5432")
    );
    assert!(out.warnings.iter().all(|w| !w.contains("s3cret-value")));
    assert!(out.warnings[1].contains("`postgresql.enabled` is true (line 5)"));
    assert!(out.text.contains("s3cret-value") && out.text.contains("enabled: true"));

    let values = "pachd:\n  postgresql:\n    host: old\npostgresql:\n  enabled: false\n";
    let out = rewrite_checked(values, &targets);
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("`pachd.postgresql` (line 2)")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn crlf_files_stay_crlf() {
    let values = "global:\r\n  postgresql:\r\n    postgresqlHost: old # rds\r\n";
    let out = rewrite_checked(
        values,
        &HelmTargets {
            postgres: Some(pg("new", 5432)),
            ..HelmTargets::default()
        },
    );
    assert_eq!(
        out.text,
        "global:\r\n  postgresql:\r\n    postgresqlHost: new # rds\r\n    postgresqlPort: \"5432\"\r\n"
    );
}

#[test]
fn non_ascii_text_before_a_value() {
    // Positions are in characters in the parser, bytes here.
    let values = "# chart’s values — ünïcödé\nglobal:\n  postgresql:\n    postgresqlHost: \"vieux-sérveur\"\n";
    let out = rewrite_checked(
        values,
        &HelmTargets {
            postgres: Some(pg("neuf", 5432)),
            ..HelmTargets::default()
        },
    );
    assert!(out.text.starts_with(
        "# chart’s values — ünïcödé\nglobal:\n  postgresql:\n    postgresqlHost: \"neuf\"\n"
    ));
    let bom = format!("\u{feff}{values}");
    let out = rewrite_checked(
        &bom,
        &HelmTargets {
            postgres: Some(pg("neuf", 5432)),
            ..HelmTargets::default()
        },
    );
    assert!(out.text.starts_with("\u{feff}# chart’s"));
    assert!(out.text.contains("postgresqlHost: \"neuf\"\n"));
}

#[test]
fn result_serializes_for_the_cli() {
    let out = rewrite(MICROSOFT, &bucket_only("az", "restored")).unwrap();
    let json = serde_json::to_value(&out).unwrap();
    assert_eq!(
        json["changes"][0]["path"],
        "pachd.storage.microsoft.container"
    );
    assert_eq!(json["changes"][0]["old"], "foo");
    assert_eq!(json["changes"][0]["new"], "restored");
    assert!(json["warnings"].as_array().unwrap().is_empty());
}

/// Shapes from the chart's own defaults around the keys: `{}` on the next
/// line followed by commented-out keys, lists of mappings, a block scalar
/// holding template braces, quoted braces.
const CHART_LIKE: &str = r#"deployTarget: "GOOGLE"

global:
  postgresql:
    postgresqlUsername: "pachyderm"
    postgresqlPassword: "insecure-user-password"
    postgresqlExistingSecretName: ""
    postgresqlDatabase: "pachyderm"
    postgresqlHost: "postgres"
    postgresqlPort: "5432"
    postgresqlSSL: "disable"
    identityDatabaseFullNameOverride: ""
  imagePullSecrets: []
  securityContexts:
    enabled: true

console:
  resources:
    {}
    #limits:
    #  cpu: "1"

loki-stack:
  loki:
    config:
      limits_config:
        retention_stream:
          - selector: '{suite="pachyderm"}'
            priority: 1
  promtail:
    config:
      snippets:
        scrapeConfigs: |
          - job_name: kubernetes-pods
            pipeline_stages:
              {{- toYaml .Values.config.snippets.pipelineStages | nindent 4 }}

pachd:
  storage:
    backend: ""
    google:
      bucket: ""
      cred: ""
    minio:
      bucket: ""
      endpoint: ""

postgresql:
  # set to false when bringing your own server
  enabled: true
"#;

#[test]
fn chart_like_values_change_only_their_lines() {
    let targets = HelmTargets {
        postgres: Some(PgTarget {
            host: "10.20.0.7".into(),
            port: 5432,
            user: Some("pach_restore".into()),
            sslmode: Some("require".into()),
        }),
        pachyderm_database: Some("pachyderm".into()),
        dex_database: Some("dex".into()),
        bucket: Some(bucket("gs", "restored-gcs")),
    };
    let out = rewrite_checked(CHART_LIKE, &targets);
    let (removed, added) = diff(CHART_LIKE, &out.text);
    assert_eq!(
        removed,
        [
            r#"    postgresqlUsername: "pachyderm""#,
            r#"    postgresqlHost: "postgres""#,
            r#"    postgresqlSSL: "disable""#,
            r#"    identityDatabaseFullNameOverride: """#,
            r#"      bucket: """#,
        ]
    );
    assert_eq!(
        added,
        [
            r#"    postgresqlUsername: "pach_restore""#,
            r#"    postgresqlHost: "10.20.0.7""#,
            r#"    postgresqlSSL: "require""#,
            r#"    identityDatabaseFullNameOverride: "dex""#,
            r#"      bucket: "restored-gcs""#,
        ]
    );
    assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
    assert!(
        out.warnings[0].contains(
            "postgresqlPassword is the password of user `pach_restore` on 10.20.0.7:5432"
        )
    );
    assert!(out.warnings[1].contains("`postgresql.enabled` is true (line 50)"));
}

#[test]
fn insertion_after_a_kept_block_scalar_keeps_its_trailing_lines() {
    let values = "global:\n  postgresql:\n    postgresqlSSLCACert: |+\n      -----BEGIN CERTIFICATE-----\n\n\nother: 1\n";
    let out = rewrite_checked(
        values,
        &HelmTargets {
            postgres: Some(pg("db", 5432)),
            ..HelmTargets::default()
        },
    );
    let doc = tree::parse(&out.text).unwrap();
    assert_eq!(
        doc.root
            .unwrap()
            .text_at(&["global", "postgresql", "postgresqlSSLCACert"]),
        Some("-----BEGIN CERTIFICATE-----\n\n\n")
    );
}
