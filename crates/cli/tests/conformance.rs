//! Runs every upstream conformance case through the real `cellwall analyze` binary, step by step
//! (policy updates, label changes), and compares each probe with the upstream expectation.

use cellwall_testkit::conformance::{run_all, AnalyzeRunner};

#[test]
fn conformance_cases_through_analyze() {
    let Some((cases, cells, skipped, failures)) = run_all(
        &mut AnalyzeRunner(cellwall_testkit::bin!("cellwall")),
        "analyze",
    ) else {
        return;
    };
    eprintln!("conformance (analyze): {cases} cases, {cells} cells checked, {skipped} probes skipped, {} mismatches", failures.len());
    assert!(cases >= 40, "expected the full case set, found {cases}");
    assert_eq!(skipped, 0);
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
