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
            hidden: vec![128, 64],
            item_id_embedding_dim: 16,
            activity_features: false,
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
    for kind in ["global", "id_embedding", "wide_deep", "limaml", "logistic"] {
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
        id_dropout: 1.0,
    };
    let fields: Vec<String> = wide.validate().into_iter().map(|i| i.field).collect();
    assert_eq!(fields, ["id_dropout", "hash_buckets"]);
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
        skipped_entities: 0,
    };
    let err = train(&method, &bad, &interactions, &tasks, 0, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, ModelError::InvalidConfig(ref issues) if issues[0].field == "learning_rate"),
        "{err}"
    );
}

#[test]
fn a_logistic_table_parses_with_its_default_grids() {
    let spec: Spec = toml::from_str(
        "[methods.lr]\nkind = \"logistic\"\n[methods.narrow]\nkind = \"logistic\"\nl2 = [1e-4]\n",
    )
    .unwrap();
    let MethodConfig::Logistic(c) = &spec.methods["lr"] else {
        panic!("not logistic")
    };
    assert_eq!(c.l2, [1e-6, 1e-5, 1e-4, 1e-3, 1e-2]);
    assert_eq!(c.cross_l2, [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]);
    assert_eq!((c.learning_rate, c.user_tag_buckets), (0.1, 1 << 22));
    assert_eq!(spec.methods["lr"].kind_name(), "logistic");
    let MethodConfig::Logistic(narrow) = &spec.methods["narrow"] else {
        panic!("not logistic")
    };
    assert_eq!(narrow.l2, [1e-4]);
    let typo = toml::from_str::<Spec>("[methods.m]\nkind = \"logistic\"\nl2s = [1e-4]\n");
    assert!(typo.unwrap_err().to_string().contains("l2s"));
}

#[test]
fn bad_logistic_l2_lists_are_issues_naming_the_field() {
    let fields_of = |l2: Vec<f64>, cross_l2: Vec<f64>| -> Vec<String> {
        MethodConfig::Logistic(LogisticConfig {
            l2,
            cross_l2,
            ..LogisticConfig::default()
        })
        .validate()
        .into_iter()
        .map(|i| i.field)
        .collect()
    };
    let good = vec![1e-4];
    for bad in [vec![], vec![-1e-3], vec![f64::NAN], vec![1e-3, 1e-3], vec![11.0]] {
        assert_eq!(fields_of(bad.clone(), good.clone()), ["l2"], "{bad:?}");
        assert_eq!(fields_of(good.clone(), bad.clone()), ["cross_l2"], "{bad:?}");
    }
    assert_eq!(fields_of(vec![0.0, 1e-2], good), Vec::<String>::new());
    let bad_rate = MethodConfig::Logistic(LogisticConfig {
        learning_rate: 0.0,
        user_tag_buckets: 0,
        ..LogisticConfig::default()
    });
    let fields: Vec<String> = bad_rate.validate().into_iter().map(|i| i.field).collect();
    assert_eq!(fields, ["learning_rate", "user_tag_buckets"]);
}
