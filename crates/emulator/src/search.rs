//! The query language of `POST /contacts/search`: a filter `{field, operator, value}` or a group
//! `{operator: AND|OR, value: [...]}`, nested at most two levels, at most 15 filters a group.

use serde_json::Value;

const MAX_DEPTH: usize = 2;
const MAX_FILTERS: usize = 15;

/// Whether `item` (a rendered Intercom object) matches `query`; `Err` with Intercom's message
/// when the query itself is invalid.
pub fn matches(query: &Value, item: &Value) -> Result<bool, String> {
    evaluate(query, item, 0)
}

fn evaluate(query: &Value, item: &Value, depth: usize) -> Result<bool, String> {
    let operator = query
        .get("operator")
        .and_then(Value::as_str)
        .ok_or("each query needs an operator")?;
    if let Some(group) = match operator {
        "AND" | "OR" => Some(
            query
                .get("value")
                .and_then(Value::as_array)
                .ok_or("AND and OR take an array of queries")?,
        ),
        _ => None,
    } {
        if depth >= MAX_DEPTH {
            return Err(format!(
                "queries can be nested at most {MAX_DEPTH} levels deep"
            ));
        }
        if group.len() > MAX_FILTERS {
            return Err(format!(
                "a query group can hold at most {MAX_FILTERS} filters"
            ));
        }
        let mut results = group.iter().map(|q| evaluate(q, item, depth + 1));
        return if operator == "AND" {
            results.try_fold(true, |all, r| r.map(|m| all && m))
        } else {
            results.try_fold(false, |any, r| r.map(|m| any || m))
        };
    }
    let field = query
        .get("field")
        .and_then(Value::as_str)
        .ok_or("a filter needs a field")?;
    let expected = query.get("value").unwrap_or(&Value::Null);
    let actual = field
        .split('.')
        .try_fold(item, |value, key| value.get(key))
        .unwrap_or(&Value::Null);
    compare(operator, actual, expected)
}

fn compare(operator: &str, actual: &Value, expected: &Value) -> Result<bool, String> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.to_lowercase()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let equal = |a: &Value, b: &Value| a == b || (text(a).is_some() && text(a) == text(b));
    let number = |v: &Value| v.as_f64();
    Ok(match operator {
        "=" => equal(actual, expected),
        "!=" => !equal(actual, expected),
        "IN" | "NIN" => {
            let options = expected.as_array().ok_or("IN and NIN take an array")?;
            let found = options.iter().any(|o| equal(actual, o));
            found == (operator == "IN")
        }
        "<" | "<=" | ">" | ">=" => match (number(actual), number(expected)) {
            (Some(a), Some(b)) => match operator {
                "<" => a < b,
                "<=" => a <= b,
                ">" => a > b,
                _ => a >= b,
            },
            _ => false,
        },
        "~" | "!~" | "^" | "$" => match (text(actual), text(expected)) {
            (Some(a), Some(b)) => match operator {
                "~" => a.contains(&b),
                "!~" => !a.contains(&b),
                "^" => a.starts_with(&b),
                _ => a.ends_with(&b),
            },
            _ => operator == "!~",
        },
        other => return Err(format!("operator {other:?} is not supported")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_and_groups_evaluate_like_intercom() {
        let contact = json!({"email": "Ann@Example.com", "role": "user", "external_id": "u1",
                             "created_at": 100, "custom_attributes": {"plan": "pro"}});
        let yes = [
            json!({"field": "email", "operator": "=", "value": "ann@example.com"}),
            json!({"field": "custom_attributes.plan", "operator": "IN", "value": ["pro", "team"]}),
            json!({"field": "created_at", "operator": ">", "value": 50}),
            json!({"field": "email", "operator": "$", "value": "example.com"}),
            json!({"operator": "AND", "value": [
                {"field": "role", "operator": "=", "value": "user"},
                {"operator": "OR", "value": [
                    {"field": "external_id", "operator": "=", "value": "nope"},
                    {"field": "external_id", "operator": "=", "value": "u1"}]}]}),
        ];
        for query in yes {
            assert!(matches(&query, &contact).unwrap(), "{query}");
        }
        let no = json!({"field": "name", "operator": "~", "value": "x"});
        assert!(!matches(&no, &contact).unwrap());
        let too_deep = json!({"operator": "AND", "value": [{"operator": "OR", "value": [
            {"operator": "AND", "value": [{"field": "id", "operator": "=", "value": 1}]}]}]});
        assert!(matches(&too_deep, &contact).is_err());
        let too_wide = json!({"operator": "OR", "value": vec![json!({"field": "id", "operator": "=", "value": 1}); 16]});
        assert!(matches(&too_wide, &contact).is_err());
        assert!(
            matches(
                &json!({"field": "id", "operator": "=~", "value": 1}),
                &contact
            )
            .is_err()
        );
    }
}
