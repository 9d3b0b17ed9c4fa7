//! jq expressions (the `jaq` crates), compiled once when a mapping is loaded and evaluated against a JSON
//! context for every request the engine makes. An expression yields exactly one value; none, or an error, is a
//! mapping error that names the key it came from.

use std::fmt;
use std::sync::Arc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;
use serde_json::Value;

type Filter = jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>;

/// A compiled jq expression and its source, for error messages.
#[derive(Clone)]
pub struct Expr {
    source: Arc<str>,
    filter: Arc<Filter>,
}

/// Two expressions are the same when their source is: what a reload compares (the compiled filter follows).
impl PartialEq for Expr {
    fn eq(&self, other: &Expr) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "jq({:?})", self.source)
    }
}

impl Expr {
    pub fn compile(code: &str) -> Result<Expr, String> {
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errs| format!("cannot parse jq {code:?}: {errs:?}"))?;
        let filter = Compiler::default().with_funs(funs).compile(modules).map_err(|errs| {
            let names: Vec<String> = errs
                .into_iter()
                .flat_map(|(_, es)| es.into_iter().map(|(name, undef)| format!("{name} ({undef:?})")))
                .collect();
            format!("cannot compile jq {code:?}: undefined {}", names.join(", "))
        })?;
        Ok(Expr {
            source: code.into(),
            filter: Arc::new(filter),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first value the expression yields for `input`.
    pub fn eval(&self, input: &Value) -> Result<Value, String> {
        let input = to_val(input)?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = self.filter.id.run((ctx, input)).map(unwrap_valr);
        match out.next() {
            Some(Ok(v)) => from_val(&v),
            Some(Err(e)) => Err(format!("jq {:?} failed: {e}", &*self.source)),
            None => Err(format!("jq {:?} produced no value", &*self.source)),
        }
    }

    /// Evaluates to a string (numbers are printed; `null` is an error).
    pub fn eval_string(&self, input: &Value) -> Result<String, String> {
        match self.eval(input)? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(format!("jq {:?} gave {other}, expected a string", &*self.source)),
        }
    }
}

fn to_val(v: &Value) -> Result<Val, String> {
    jaq_json::read::parse_single(v.to_string().as_bytes()).map_err(|e| format!("cannot pass JSON to jq: {e:?}"))
}

fn from_val(v: &Val) -> Result<Value, String> {
    serde_json::from_str(&v.to_string()).map_err(|e| format!("jq produced something that is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_against_the_context() {
        let e = Expr::compile(r#"{promptText: .request.prompt, ratio: (.size | sub("x"; ":")), n: (.seconds * 2)}"#)
            .unwrap();
        let out = e
            .eval(&json!({"request": {"prompt": "a fox"}, "size": "1280x720", "seconds": 4}))
            .unwrap();
        assert_eq!(out, json!({"promptText": "a fox", "ratio": "1280:720", "n": 8}));
        let s = Expr::compile(r#""/v1/tasks/\(.job.backend_job_id)""#).unwrap();
        assert_eq!(
            s.eval_string(&json!({"job": {"backend_job_id": "t1"}})).unwrap(),
            "/v1/tasks/t1"
        );
    }

    #[test]
    fn bad_expressions_and_empty_results_are_errors() {
        assert!(Expr::compile("{a: }").is_err());
        assert!(Expr::compile("no_such_function(1)").is_err());
        assert!(Expr::compile("empty").unwrap().eval(&json!(null)).is_err());
        assert!(Expr::compile("error(\"x\")").unwrap().eval(&json!(null)).is_err());
    }

    #[test]
    fn expressions_are_shareable_across_threads() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        send_sync(&Expr::compile(".").unwrap());
    }
}
