//! Prints the summary of the default synthetic data set and its default slicing, as JSON.
fn main() {
    let seed = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let dataset = limaml_data::load(&Default::default(), std::path::Path::new("."), seed).unwrap();
    let tasks = limaml_data::slice(&dataset, &Default::default(), seed).unwrap();
    println!(
        "{}",
        serde_json::to_string_pretty(&limaml_data::summarize(&dataset, Some(&tasks))).unwrap()
    );
}
