//! The configuration's own tests: layering, validation, secrets, and the deployment files.

// figment's `Jail` closures must return figment's own (large) error type.
#![allow(clippy::result_large_err)]

use figment::Jail;

use super::*;

fn no_flags() -> std::collections::BTreeMap<String, String> {
    Default::default()
}

#[test]
fn layers_apply_in_order() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "plinth.toml",
            "listen = \"127.0.0.1:9000\"\nlog_level = \"debug\"",
        )?;
        jail.set_env("PLINTH_LOG_LEVEL", "warn");
        jail.set_env("PLINTH_QUOTAS__OBJECTS", "12");
        let mut flags = no_flags();
        flags.insert("data_dir".into(), "/tmp/flag".into());
        let config = Config::load(None, flags).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.log_level, "warn");
        assert_eq!(config.quotas.objects, Some(12));
        assert_eq!(config.data_dir, PathBuf::from("/tmp/flag"));
        Ok(())
    });
}

#[test]
fn client_variables_are_not_configuration() {
    Jail::expect_with(|jail| {
        jail.set_env("PLINTH_URL", "http://x");
        jail.set_env("PLINTH_TOKEN", "t");
        jail.set_env("PLINTH_TEST_POSTGRES_URL", "postgres://x");
        Config::load(None, no_flags()).unwrap();
        Ok(())
    });
}

#[test]
fn unknown_and_mistyped_keys_are_named() {
    Jail::expect_with(|jail| {
        jail.set_env("PLINTH_LISTN", "127.0.0.1:1");
        let err = Config::load(None, no_flags())
            .unwrap_err()
            .to_string()
            .to_lowercase();
        assert!(err.contains("listn"), "{err}");
        Ok(())
    });
    Jail::expect_with(|jail| {
        jail.set_env("PLINTH_LISTEN", "not an address");
        let err = Config::load(None, no_flags())
            .unwrap_err()
            .to_string()
            .to_lowercase();
        assert!(err.contains("listen"), "{err}");
        Ok(())
    });
}

#[test]
fn a_secret_from_both_sources_is_refused() {
    Jail::expect_with(|jail| {
        jail.set_env("PLINTH_ADMIN_TOKEN", "a");
        jail.set_env("PLINTH_ADMIN_TOKEN_FILE", "/tmp/x");
        let err = Config::load(None, no_flags()).unwrap_err().to_string();
        assert!(err.contains("admin_token"), "{err}");
        Ok(())
    });
}

#[test]
fn weak_admin_tokens_are_refused() {
    for weak in [
        "",
        "short",
        "plinth_sk_aaaaaaaaaaaaaaaaaaaaaaaa",
        "has spaces in it 123456",
    ] {
        let config = Config {
            admin_token: Some(Secret::new(weak)),
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("admin_token"), "{weak:?}: {err}");
    }
    let strong = Config {
        admin_token: Some(Secret::new("x".repeat(32))),
        ..Config::default()
    };
    strong.validate().unwrap();
}

#[test]
fn secrets_never_print() {
    let config = Config {
        admin_token: Some(Secret::new("hunter2")),
        ..Config::default()
    };
    assert!(!format!("{config:?}").contains("hunter2"));
    assert!(!serde_json::to_string(&config).unwrap().contains("hunter2"));
}

#[test]
fn the_compose_file_passes_only_known_settings() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/compose.yaml");
    let compose: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let services = compose["services"].as_mapping().expect("services");
    let mut checked = Vec::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        if !name.starts_with("plinth") {
            continue;
        }
        let vars: Vec<(String, String)> = service["environment"]
            .as_mapping()
            .expect("a plinth service has an environment map")
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    serde_yaml_ng::Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other).unwrap().trim().to_owned(),
                };
                (k.as_str().unwrap().to_owned(), value)
            })
            .collect();
        assert!(
            vars.iter().all(|(k, _)| k.starts_with("PLINTH_")),
            "{name}: {vars:?}"
        );
        let config = Config::from_env_vars(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .unwrap_or_else(|err| panic!("{name} passes a setting Plinth rejects: {err}"));
        assert!(config.database_url().starts_with("postgres://"), "{name}");
        assert_eq!(config.log_format, LogFormat::Json, "{name}");
        checked.push((name.to_owned(), config.storage_backend().unwrap()));
    }
    let backends: Vec<_> = checked.iter().map(|(_, backend)| backend.clone()).collect();
    assert!(
        backends
            .iter()
            .any(|b| matches!(b, StorageBackend::File(_))),
        "{checked:?}"
    );
    assert!(
        backends
            .iter()
            .any(|b| matches!(b, StorageBackend::S3 { .. })),
        "{checked:?}"
    );
}

#[test]
fn unknown_variables_in_a_deployment_are_caught() {
    let err = Config::from_env_vars([("PLINTH_DATABSE_URL", "postgres://x")]).unwrap_err();
    assert!(err.to_string().contains("databse_url"), "{err}");
}

#[test]
fn the_example_configuration_file_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/plinth.toml");
    Jail::expect_with(|_| {
        let config = Config::load(Some(Path::new(path)), no_flags()).unwrap();
        assert_eq!(config.quotas.request_burst, Some(200));
        assert_eq!(config.token_ttl, Duration::from_secs(900));
        Ok(())
    });
}

#[test]
fn push_allow_entries_are_addresses_or_networks() {
    let with = |entries: &[&str]| Config {
        messaging_push_allow: entries.iter().map(|e| (*e).to_owned()).collect(),
        ..Config::default()
    };
    let allowed = with(&["127.0.0.1", "10.1.0.0/16", "::1"])
        .messaging_push_allow()
        .unwrap();
    let as_text: Vec<String> = allowed.iter().map(ToString::to_string).collect();
    assert_eq!(as_text, ["127.0.0.1/32", "10.1.0.0/16", "::1/128"]);
    for bad in ["localhost", "10.1.0.0/33", ""] {
        let err = with(&[bad]).validate().unwrap_err().to_string();
        assert!(err.contains("messaging_push_allow"), "{bad}: {err}");
    }
}

#[test]
fn messaging_urls_name_a_directory_or_brokers() {
    let with = |url: &str| Config {
        messaging_url: Some(url.into()),
        ..Config::default()
    };
    assert_eq!(
        Config::default().messaging_backend().unwrap(),
        MessagingBackend::File(Config::default().data_dir.join("messages"))
    );
    assert_eq!(
        with("file:///var/lib/plinth/log")
            .messaging_backend()
            .unwrap(),
        MessagingBackend::File("/var/lib/plinth/log".into())
    );
    assert_eq!(
        with("kafka://k1:9092,k2:9092").messaging_backend().unwrap(),
        MessagingBackend::Kafka("k1:9092,k2:9092".into())
    );
    for bad in ["kafka://", "kafka://k1", "file://", "nats://x:4222"] {
        let err = with(bad).messaging_backend().unwrap_err().to_string();
        assert!(err.contains("messaging_url"), "{bad}: {err}");
    }
}

#[test]
fn storage_urls_name_a_directory_or_a_bucket() {
    let with = |url: &str| Config {
        storage_url: Some(url.into()),
        ..Config::default()
    };
    assert_eq!(
        with("s3://plinth/objects/").storage_backend().unwrap(),
        StorageBackend::S3 {
            bucket: "plinth".into(),
            prefix: "objects/".into()
        }
    );
    assert_eq!(
        with("s3://plinth").storage_backend().unwrap(),
        StorageBackend::S3 {
            bucket: "plinth".into(),
            prefix: String::new()
        }
    );
    assert_eq!(
        with("file:///srv/b").storage_backend().unwrap(),
        StorageBackend::File("/srv/b".into())
    );
    for bad in ["s3://", "file://", "gs://x", "/plain/path"] {
        assert!(
            with(bad)
                .validate()
                .unwrap_err()
                .to_string()
                .contains("storage_url"),
            "{bad}"
        );
    }
}

#[test]
fn an_unknown_database_scheme_is_refused() {
    let config = Config {
        database_url: Some("mysql://x".into()),
        ..Config::default()
    };
    assert!(
        config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("database_url")
    );
}
