//! `--label-selector`: parsed once, at start-up, so that a bad one is one
//! clear error rather than a watch that fails forever, and matched against
//! a pod's labels to tell a pod that left the selector (the watch reports
//! it deleted: it is no longer watched, its report is left alone) from one
//! that was deleted.
//!
//! The grammar is the API server's (`k8s.io/apimachinery/pkg/labels`):
//! comma-separated requirements `key`, `!key`, `key=value`, `key==value`,
//! `key!=value`, `key in (v1,v2)`, `key notin (v1,v2)`. The numeric `>` and
//! `<` are refused: they never select pods by label in practice, and kube's
//! `Selector` cannot match them.

use kube::core::{Expression, Selector, SelectorExt};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq)]
pub struct PodSelector {
    text: String,
    selector: Selector,
}

impl PodSelector {
    /// Parses a label selector; the error names the requirement at fault.
    pub fn parse(text: &str) -> Result<PodSelector, String> {
        let mut exprs = Vec::new();
        for term in split_terms(text)? {
            exprs.push(requirement(term.trim()).map_err(|e| format!("`{}`: {e}", term.trim()))?);
        }
        if exprs.is_empty() {
            return Err("an empty label selector selects every pod: leave it out instead".into());
        }
        Ok(PodSelector {
            text: text.trim().to_string(),
            selector: exprs.into_iter().collect(),
        })
    }

    /// The selector as given, for the watch.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a pod with these labels is selected.
    pub fn selects(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        match labels {
            Some(l) => self.selector.matches(l),
            None => self.selector.matches(&BTreeMap::new()),
        }
    }
}

/// Splits at the commas that are not inside a value set's parentheses.
fn split_terms(text: &str) -> Result<Vec<&str>, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("`{text}`: a `)` without its `(`"));
                }
            }
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("`{text}`: a `(` without its `)`"));
    }
    terms.push(&text[start..]);
    Ok(terms.into_iter().filter(|t| !t.trim().is_empty()).collect())
}

fn word(s: &str, what: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("no {what}"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_whitespace() || "()=!,<>".contains(*c))
    {
        return Err(format!("`{c}` in the {what} `{s}`"));
    }
    Ok(s.to_string())
}

fn value(s: &str) -> Result<String, String> {
    // An empty value is valid (`key=` selects key with an empty value).
    if s.trim().is_empty() {
        return Ok(String::new());
    }
    word(s, "value")
}

fn requirement(term: &str) -> Result<Expression, String> {
    if term.contains('<') || term.contains('>') {
        return Err("the numeric operators `<` and `>` are not supported".into());
    }
    if let Some(open) = term.find('(') {
        let close = term
            .strip_suffix(')')
            .ok_or("nothing may follow the value set's `)`")?;
        let mut head = term[..open].split_whitespace();
        let (key, op) = (head.next().unwrap_or_default(), head.next());
        if head.next().is_some() {
            return Err("expected `key in (values)` or `key notin (values)`".into());
        }
        let values: BTreeSet<String> = close[open + 1..]
            .split(',')
            .map(value)
            .collect::<Result<_, _>>()?;
        let key = word(key, "key")?;
        return match op {
            Some("in") => Ok(Expression::In(key, values)),
            Some("notin") => Ok(Expression::NotIn(key, values)),
            _ => Err("expected `in` or `notin` before the value set".into()),
        };
    }
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(word(key, "key")?));
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(Expression::NotEqual(word(k, "key")?, value(v)?));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Expression::Equal(word(k, "key")?, value(v)?));
    }
    Ok(Expression::Exists(word(term, "key")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_form_of_the_api_servers_grammar_matches_as_it_does() {
        let s = PodSelector::parse(
            "app=web, tier==front,env!=prod,zone in (a, b),team notin (x),canary,!legacy",
        )
        .unwrap();
        let ok = labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("env", "dev"),
            ("zone", "b"),
            ("team", "y"),
            ("canary", ""),
        ]);
        assert!(s.selects(Some(&ok)));
        for (k, v) in [
            ("app", "api"),
            ("tier", "back"),
            ("env", "prod"),
            ("zone", "c"),
            ("team", "x"),
        ] {
            let mut l = ok.clone();
            l.insert(k.into(), v.into());
            assert!(!s.selects(Some(&l)), "{k}={v} must not be selected");
        }
        let mut l = ok.clone();
        l.remove("canary");
        assert!(!s.selects(Some(&l)), "canary must exist");
        let mut l = ok.clone();
        l.insert("legacy".into(), "1".into());
        assert!(!s.selects(Some(&l)), "legacy must not exist");
        assert!(!s.selects(None));
        assert_eq!(
            s.as_str(),
            "app=web, tier==front,env!=prod,zone in (a, b),team notin (x),canary,!legacy"
        );
    }

    #[test]
    fn a_pod_without_labels_is_selected_only_by_negations() {
        let s = PodSelector::parse("!legacy,env!=prod,team notin (x)").unwrap();
        assert!(s.selects(None));
    }

    #[test]
    fn bad_selectors_are_one_clear_error() {
        for (bad, says) in [
            ("app in (a,b", "without its `)`"),
            ("app=web)", "without its `(`"),
            ("app within (a)", "expected `in` or `notin`"),
            ("replicas>2", "not supported"),
            ("a b=c", "in the key"),
            ("=web", "no key"),
            ("", "empty label selector"),
            ("app in (a) x", "nothing may follow"),
        ] {
            let e = PodSelector::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
