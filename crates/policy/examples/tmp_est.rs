use cedar_policy::*;
use std::str::FromStr;
fn main() {
    let src = r#"permit(principal in Sovereign::Principal::"x", action in [Sovereign::Action::"read"], resource is Sovereign::Data) when { principal.location == "US" && context has purpose && ["a"].contains(principal.entity) && resource["field_class"] == "p" } unless { principal.getTag("t") == 1 || principal has a.b };"#;
    let p = PolicySet::from_str(src).unwrap();
    for q in p.policies() {
        println!("{}", serde_json::to_string(&q.to_json().unwrap()).unwrap());
    }
}
