//! Specifications of the method and training configuration as the spec embeds it.

use std::collections::BTreeMap;

use limaml_models::*;

#[derive(Debug, serde::Deserialize)]
struct Spec {
    methods: BTreeMap<String, MethodConfig>,
    #[serde(default)]
    train: TrainConfig,
}

#[test]
fn method_tables_parse_with_defaults_for_every_field() {
    let spec: Spec = toml::from_str(
        r#"
        [methods.g]
        kind = "global"
        [methods.ids]
        kind = "id_embedding"
        user_embedding_dim = 8
        [methods.wd]
        kind = "wide_deep"
        [methods.meta]
        kind = "limaml"
        inner_steps = 3
        meta_inputs = ["activity", "features"]
        "#,
    )
    .unwrap();
    assert_eq!(
        spec.methods["g"],
        MethodConfig::Global {
            hidden: vec![64, 32],
            item_id_embedding_dim: 16
        }
    );
    assert!(matches!(
        spec.methods["ids"],
        MethodConfig::IdEmbedding {
            user_embedding_dim: 8,
            ..
        }
    ));
    assert!(matches!(
        spec.methods["wd"],
        MethodConfig::WideDeep {
            hash_buckets: 16384,
            ..
        }
    ));
    let MethodConfig::Limaml(c) = &spec.methods["meta"] else {
        panic!("not limaml")
    };
    assert_eq!(c.inner_steps, 3);
    assert_eq!(c.meta_inputs, [MetaInput::Activity, MetaInput::Features]);
    assert_eq!(
        (c.meta_embedding_dim, c.meta_batch, c.second_order),
        (16, 16, false)
    );
    assert_eq!(spec.train, TrainConfig::default());
    assert_eq!(spec.train.epochs, 20);
}

#[test]
fn unknown_fields_and_kinds_are_rejected() {
    let typo = toml::from_str::<Spec>("[methods.m]\nkind = \"limaml\"\ninner_step = 2\n");
    assert!(typo.unwrap_err().to_string().contains("inner_step"));
    assert!(toml::from_str::<Spec>("[methods.m]\nkind = \"svm\"\n").is_err());
    assert!(toml::from_str::<Spec>("[methods.m]\nkind = \"global\"\nmeta_batch = 2\n").is_err());
    assert!(
        toml::from_str::<Spec>("[methods.m]\nkind = \"global\"\n[train]\nepoch = 2\n").is_err()
    );
}

#[test]
fn defaults_are_valid() {
    for kind in ["global", "id_embedding", "wide_deep", "limaml"] {
        assert_eq!(
            MethodConfig::default_for(kind).unwrap().validate(),
            vec![],
            "{kind}"
        );
    }
    assert_eq!(TrainConfig::default().validate(), vec![]);
}

#[test]
fn validation_names_each_out_of_range_field() {
    let method = MethodConfig::Limaml(LimamlConfig {
        inner_lr: -0.1,
        meta_batch: 0,
        meta_embedding_dim: 0,
        meta_inputs: vec![],
        unknown_id_rate: 1.5,
        hidden: vec![0],
        ..LimamlConfig::default()
    });
    let fields: Vec<String> = method.validate().into_iter().map(|i| i.field).collect();
    assert_eq!(
        fields,
        [
            "hidden",
            "meta_embedding_dim",
            "meta_inputs",
            "unknown_id_rate",
            "inner_lr",
            "meta_batch"
        ]
    );
    let train = TrainConfig {
        epochs: 0,
        learning_rate: f64::NAN,
        batch_size: 0,
        patience: 0,
        l2: -1.0,
        max_support: 0,
        max_query: 0,
    };
    let fields: Vec<String> = train.validate().into_iter().map(|i| i.field).collect();
    assert_eq!(
        fields,
        [
            "epochs",
            "learning_rate",
            "batch_size",
            "patience",
            "l2",
            "max_support",
            "max_query"
        ]
    );
    let wide = MethodConfig::WideDeep {
        hidden: vec![8],
        item_id_embedding_dim: 4,
        user_embedding_dim: 4,
        hash_buckets: 0,
    };
    assert_eq!(wide.validate()[0].field, "hash_buckets");
}

#[test]
fn train_refuses_an_invalid_configuration() {
    let method = MethodConfig::default_for("global").unwrap();
    let bad = TrainConfig {
        learning_rate: 0.0,
        ..TrainConfig::default()
    };
    let interactions = limaml_data::Interactions {
        user: vec![],
        item: vec![],
        label: vec![],
        timestamp: vec![],
        true_probability: None,
    };
    let tasks = limaml_data::TaskSet {
        entity: limaml_data::TaskEntity::User,
        tasks: vec![],
        segments: vec![],
        segment_bounds: vec![],
        features: limaml_data::FeatureTables {
            n_users: 0,
            n_items: 0,
            user_features: vec![],
            user_dim: 0,
            item_features: vec![],
            item_dim: 0,
            item_tags: vec![],
            n_tags: 0,
            user_columns: vec![],
            item_columns: vec![],
        },
        baseline_train_rows: vec![],
    };
    let err = train(&method, &bad, &interactions, &tasks, 0, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, ModelError::InvalidConfig(ref issues) if issues[0].field == "learning_rate"),
        "{err}"
    );
}
