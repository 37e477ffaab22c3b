//! The subset of Kubernetes JSONPath that CRD printer columns use:
//! `.a.b`, `['a.b']`, `[0]`, `[-1]`, `[1:3]`, `[*]`, `.*`, `..a`, `[0,2]`
//! and filters such as `[?(@.type=="Ready")]`, evaluated with missing keys allowed.

use serde_json::Value;

/// One step of a parsed path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// A map key.
    Field(String),
    /// Every value of a map or element of an array.
    Wildcard,
    /// Every node below (and including) the current ones, before the next step.
    Descend,
    /// Array indexes (negative ones count from the end); several for a union.
    Index(Vec<i64>),
    /// Array slice `[start:end:step]`.
    Slice(Option<i64>, Option<i64>, Option<i64>),
    /// Array elements for which the filter holds.
    Filter(Box<Filter>),
}

/// A filter `@.path op operand`, or an existence test when `op` is `None`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Filter {
    left: Vec<Step>,
    op: Option<(Op, Operand)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The right-hand side of a filter comparison.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Path(Vec<Step>),
    Literal(Value),
}

/// Why a path could not be parsed or evaluated.
#[derive(Debug, PartialEq)]
pub(crate) struct PathError(pub(crate) String);

/// Parses a path such as `.status.conditions[?(@.type=="Ready")].status`.
pub(crate) fn parse(path: &str) -> Result<Vec<Step>, PathError> {
    let chars: Vec<char> = path.trim().chars().collect();
    let mut p = Parser {
        chars: &chars,
        pos: 0,
    };
    if p.peek() == Some('$') {
        p.pos += 1;
    }
    let steps = p.steps()?;
    match p.peek() {
        None => Ok(steps),
        Some(c) => Err(PathError(format!("unexpected {c:?} at {}", p.pos))),
    }
}

struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(' ') {
            self.pos += 1;
        }
    }

    /// Steps until the end of input or a character that cannot continue a path.
    fn steps(&mut self) -> Result<Vec<Step>, PathError> {
        let mut steps = Vec::new();
        loop {
            match self.peek() {
                Some('.') => {
                    self.pos += 1;
                    if self.eat('.') {
                        steps.push(Step::Descend);
                    }
                    if self.eat('*') {
                        steps.push(Step::Wildcard);
                    } else if self.peek() != Some('[') {
                        let field = self.field();
                        if field.is_empty() && !steps.is_empty() {
                            return Err(PathError(format!("empty field at {}", self.pos)));
                        }
                        if !field.is_empty() {
                            steps.push(Step::Field(field));
                        }
                    }
                }
                Some('[') => {
                    self.pos += 1;
                    steps.push(self.bracket()?);
                }
                _ => return Ok(steps),
            }
        }
    }

    /// A bare field name; a backslash escapes the next character (e.g. `\.`).
    fn field(&mut self) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            let escaped = self.chars.get(self.pos + 1).filter(|_| c == '\\');
            if let Some(&next) = escaped {
                out.push(next);
                self.pos += 2;
                continue;
            }
            if matches!(
                c,
                '.' | '[' | ']' | ' ' | '(' | ')' | ',' | '=' | '!' | '<' | '>' | '{' | '}'
            ) {
                break;
            }
            out.push(c);
            self.pos += 1;
        }
        out
    }

    fn bracket(&mut self) -> Result<Step, PathError> {
        self.skip_spaces();
        let step = match self.peek() {
            Some('*') => {
                self.pos += 1;
                Step::Wildcard
            }
            Some('?') => {
                self.pos += 1;
                if !self.eat('(') {
                    return Err(PathError("expected ( after ?".into()));
                }
                let filter = self.filter()?;
                if !self.eat(')') {
                    return Err(PathError("unclosed filter".into()));
                }
                Step::Filter(Box::new(filter))
            }
            Some('\'' | '"') => Step::Field(self.quoted()?),
            _ => self.indexes()?,
        };
        self.skip_spaces();
        if !self.eat(']') {
            return Err(PathError(format!("expected ] at {}", self.pos)));
        }
        Ok(step)
    }

    fn quoted(&mut self) -> Result<String, PathError> {
        let quote = self.peek().unwrap_or('\'');
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(PathError("unterminated string".into())),
                Some('\\') => {
                    let next = self.chars.get(self.pos + 1).copied().unwrap_or('\\');
                    out.push(next);
                    self.pos += 2;
                }
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn number(&mut self) -> Option<i64> {
        let start = self.pos;
        self.eat('-');
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        self.chars[start..self.pos]
            .iter()
            .collect::<String>()
            .parse()
            .ok()
    }

    /// `[0]`, `[-1]`, `[0,2]` or a slice `[1:3]`, `[::2]`.
    fn indexes(&mut self) -> Result<Step, PathError> {
        let first = self.number();
        if self.peek() == Some(':') {
            self.pos += 1;
            let end = self.number();
            let step = if self.eat(':') { self.number() } else { None };
            return Ok(Step::Slice(first, end, step));
        }
        let mut all = vec![first.ok_or_else(|| PathError(format!("bad index at {}", self.pos)))?];
        while self.eat(',') {
            self.skip_spaces();
            all.push(
                self.number()
                    .ok_or_else(|| PathError("bad index in union".into()))?,
            );
        }
        Ok(Step::Index(all))
    }

    fn filter(&mut self) -> Result<Filter, PathError> {
        self.skip_spaces();
        let left = self.relative_path()?;
        self.skip_spaces();
        let op = match (self.peek(), self.chars.get(self.pos + 1).copied()) {
            (Some('='), Some('=')) => Some((Op::Eq, 2)),
            (Some('!'), Some('=')) => Some((Op::Ne, 2)),
            (Some('<'), Some('=')) => Some((Op::Le, 2)),
            (Some('>'), Some('=')) => Some((Op::Ge, 2)),
            (Some('<'), _) => Some((Op::Lt, 1)),
            (Some('>'), _) => Some((Op::Gt, 1)),
            _ => None,
        };
        let Some((op, width)) = op else {
            return Ok(Filter { left, op: None });
        };
        self.pos += width;
        self.skip_spaces();
        let right = self.operand()?;
        self.skip_spaces();
        Ok(Filter {
            left,
            op: Some((op, right)),
        })
    }

    fn relative_path(&mut self) -> Result<Vec<Step>, PathError> {
        if !self.eat('@') {
            return Err(PathError(format!("expected @ at {}", self.pos)));
        }
        self.steps()
    }

    fn operand(&mut self) -> Result<Operand, PathError> {
        match self.peek() {
            Some('@') => Ok(Operand::Path(self.relative_path()?)),
            Some('\'' | '"') => Ok(Operand::Literal(Value::String(self.quoted()?))),
            _ => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
                {
                    self.pos += 1;
                }
                let word: String = self.chars[start..self.pos].iter().collect();
                literal(&word)
                    .map(Operand::Literal)
                    .ok_or_else(|| PathError(format!("bad literal {word:?}")))
            }
        }
    }
}

/// A bare filter literal: true/false, an integer or a float.
fn literal(word: &str) -> Option<Value> {
    match word {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        w if w.contains(['.', 'e', 'E']) => w.parse::<f64>().ok().map(Value::from),
        w => w.parse::<i64>().ok().map(Value::from),
    }
}

/// Evaluates parsed steps against `root`, returning every match in order.
pub(crate) fn find<'a>(root: &'a Value, steps: &[Step]) -> Result<Vec<&'a Value>, PathError> {
    let mut current = vec![root];
    for step in steps {
        let mut next = Vec::new();
        for value in current {
            apply(step, value, &mut next)?;
        }
        current = next;
    }
    Ok(current)
}

fn apply<'a>(step: &Step, value: &'a Value, out: &mut Vec<&'a Value>) -> Result<(), PathError> {
    match (step, value) {
        (_, Value::Null) => {}
        (Step::Field(key), Value::Object(map)) => out.extend(map.get(key)),
        (Step::Field(_), _) => {}
        (Step::Wildcard, Value::Object(map)) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.extend(keys.into_iter().map(|k| &map[k]));
        }
        (Step::Wildcard, Value::Array(items)) => out.extend(items),
        (Step::Wildcard, _) => {}
        (Step::Descend, v) => descend(v, out),
        (Step::Index(indexes), Value::Array(items)) => {
            let len = items.len() as i64;
            for &i in indexes {
                let i = if i < 0 { i + len } else { i };
                if (0..len).contains(&i) {
                    out.push(&items[i as usize]);
                }
            }
        }
        (Step::Slice(start, end, stride), Value::Array(items)) => {
            let len = items.len() as i64;
            let clamp = |i: i64| if i < 0 { (i + len).max(0) } else { i.min(len) };
            let (from, to) = (clamp(start.unwrap_or(0)), clamp(end.unwrap_or(len)));
            let stride = stride.unwrap_or(1).max(1) as usize;
            if from < to {
                out.extend(items[from as usize..to as usize].iter().step_by(stride));
            }
        }
        (Step::Filter(f), Value::Array(items)) => {
            for item in items {
                if f.holds(item)? {
                    out.push(item);
                }
            }
        }
        (_, other) => return Err(PathError(format!("{other} is not an array"))),
    }
    Ok(())
}

/// `v` and every node below it, in document order.
fn descend<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    out.push(v);
    match v {
        Value::Object(map) => map.values().for_each(|c| descend(c, out)),
        Value::Array(items) => items.iter().for_each(|c| descend(c, out)),
        _ => {}
    }
}

impl Filter {
    fn holds(&self, item: &Value) -> Result<bool, PathError> {
        let lefts = find(item, &self.left)?;
        let Some((op, operand)) = &self.op else {
            return Ok(!lefts.is_empty());
        };
        let left = match lefts.as_slice() {
            [] => return Ok(false),
            [one] => *one,
            _ => return Err(PathError("can only compare one element at a time".into())),
        };
        let right = match operand {
            Operand::Literal(v) => v,
            Operand::Path(p) => match find(item, p)?.as_slice() {
                [] => return Ok(false),
                [one] => *one,
                _ => return Err(PathError("can only compare one element at a time".into())),
            },
        };
        compare(*op, left, right)
    }
}

/// Compares like Go templates: only values of the same basic kind are comparable.
fn compare(op: Op, left: &Value, right: &Value) -> Result<bool, PathError> {
    use std::cmp::Ordering;
    let incompatible = || {
        PathError(format!(
            "incompatible types for comparison: {left} and {right}"
        ))
    };
    let order = match (left, right) {
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Number(a), Value::Number(b)) if a.is_f64() == b.is_f64() => {
            let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            a.partial_cmp(&b).ok_or_else(incompatible)?
        }
        (Value::Bool(a), Value::Bool(b)) if matches!(op, Op::Eq | Op::Ne) => a.cmp(b),
        _ => return Err(incompatible()),
    };
    Ok(match op {
        Op::Eq => order == Ordering::Equal,
        Op::Ne => order != Ordering::Equal,
        Op::Lt => order == Ordering::Less,
        Op::Le => order != Ordering::Greater,
        Op::Gt => order == Ordering::Greater,
        Op::Ge => order != Ordering::Less,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(path: &str, v: &Value) -> Vec<Value> {
        let steps = parse(path).expect("parses");
        find(v, &steps)
            .expect("evaluates")
            .into_iter()
            .cloned()
            .collect()
    }

    #[test]
    fn fields_indexes_and_quoted_keys() {
        let v = json!({"spec": {"items": [{"name": "a"}, {"name": "b"}, {"name": "c"}]},
                       "metadata": {"labels": {"app.kubernetes.io/name": "web"}}});
        assert_eq!(eval(".spec.items[0].name", &v), [json!("a")]);
        assert_eq!(eval(".spec.items[-1].name", &v), [json!("c")]);
        assert_eq!(
            eval(".spec.items[*].name", &v),
            [json!("a"), json!("b"), json!("c")]
        );
        assert_eq!(eval(".spec.items[1:].name", &v), [json!("b"), json!("c")]);
        assert_eq!(eval(".spec.items[0,2].name", &v), [json!("a"), json!("c")]);
        assert_eq!(
            eval(".metadata.labels['app.kubernetes.io/name']", &v),
            [json!("web")]
        );
        assert_eq!(
            eval(r".metadata.labels.app\.kubernetes\.io/name", &v),
            [json!("web")]
        );
        assert_eq!(eval("..name", &v), [json!("a"), json!("b"), json!("c")]);
        assert!(eval(".spec.missing.deeper", &v).is_empty());
        assert!(eval(".spec.items[7]", &v).is_empty());
    }

    #[test]
    fn filters() {
        let v = json!({"status": {"conditions": [
            {"type": "Synced", "status": "True", "n": 1},
            {"type": "Ready", "status": "False", "n": 2}]}});
        assert_eq!(
            eval(r#".status.conditions[?(@.type=="Ready")].status"#, &v),
            [json!("False")]
        );
        assert_eq!(
            eval(".status.conditions[?(@.type == 'Synced')].status", &v),
            [json!("True")]
        );
        assert_eq!(
            eval(".status.conditions[?(@.n > 1)].type", &v),
            [json!("Ready")]
        );
        assert_eq!(
            eval(".status.conditions[?(@.status != \"True\")].n", &v),
            [json!(2)]
        );
        assert_eq!(
            eval(".status.conditions[?(@.n)].n", &v),
            [json!(1), json!(2)]
        );
        let steps = parse(".status.conditions[?(@.n == \"x\")]").expect("parses");
        assert!(find(&v, &steps).is_err());
    }

    #[test]
    fn bad_paths_are_rejected() {
        assert!(parse(".spec[").is_err());
        assert!(parse(".spec[?(@.a == )]").is_err());
        assert!(parse(".a b").is_err());
        assert!(parse(".spec['x").is_err());
    }
}
