//! Plan graphs: cycles are reported naming every stage on them.

use std::sync::Arc;

use limaml::plan::{PlanBuilder, PlanError};
use limaml::stages::{Stage, StageContext, StageError, StageOutput};

struct Named(&'static str);

impl Stage for Named {
    fn kind(&self) -> &'static str {
        "test"
    }
    fn version(&self) -> u32 {
        1
    }
    fn params(&self) -> serde_json::Value {
        serde_json::json!({ "name": self.0 })
    }
    fn run(&self, _: &StageContext<'_>) -> Result<StageOutput, StageError> {
        Ok(StageOutput::default())
    }
}

#[test]
fn a_cycle_is_reported_with_every_stage_on_it() {
    let mut builder = PlanBuilder::new();
    let a = builder.add("a".into(), Arc::new(Named("a")), vec![]).unwrap();
    let b = builder.add("b".into(), Arc::new(Named("b")), vec![("in".into(), a)]).unwrap();
    let c = builder.add("c".into(), Arc::new(Named("c")), vec![("in".into(), b)]).unwrap();
    builder.add("d".into(), Arc::new(Named("d")), vec![("in".into(), c)]).unwrap();
    builder.connect(c, a, "back");
    match builder.finish("cyclic".into(), None) {
        Err(PlanError::Cycle(names)) => assert_eq!(names, vec!["a", "b", "c"]),
        Err(other) => panic!("expected a cycle, got {other}"),
        Ok(_) => panic!("expected a cycle"),
    }
}

#[test]
fn identical_stages_are_one_node() {
    let mut builder = PlanBuilder::new();
    let first = builder.add("x".into(), Arc::new(Named("same")), vec![]).unwrap();
    let second = builder.add("y".into(), Arc::new(Named("same")), vec![]).unwrap();
    assert_eq!(first, second);
}
