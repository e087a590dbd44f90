//! The MovieLens loaders, GroupLens layout: ML-100K (`u.data`, `u.user`, `u.item`, `u.genre`)
//! and ML-1M (`ratings.dat`, `users.dat`, `movies.dat`), detected from the folder's files.
//!
//! Owns parsing those files into a [`Dataset`]: user features gender, occupation, age bucket and
//! zip prefix (categorical); item genres (multi-hot) and release year (numeric); label =
//! rating >= click threshold. Must not download anything or copy the data anywhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::BadRowPolicy;
use crate::encode::{categorical_field, multi_hot_field, numeric_field};
use crate::error::DataError;
use crate::text::{excerpt, malformed, numbered_lines, read_latin1, read_text, BadRows};
use crate::types::{Dataset, EntityTable, Interactions};

/// Which MovieLens release a folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovielensLayout {
    Ml100k,
    Ml1m,
}

/// The layout of `dir`: ML-100K if it has `u.data`, ML-1M if it has `ratings.dat`.
pub fn detect_layout(dir: &Path) -> Result<MovielensLayout, DataError> {
    if dir.join("u.data").is_file() {
        Ok(MovielensLayout::Ml100k)
    } else if dir.join("ratings.dat").is_file() {
        Ok(MovielensLayout::Ml1m)
    } else if !dir.exists() {
        Err(DataError::MissingFile {
            path: dir.to_path_buf(),
        })
    } else {
        Err(DataError::UnrecognizedLayout {
            dir: dir.to_path_buf(),
        })
    }
}

/// The files whose content defines the data set (for cache keys).
pub fn source_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let names: &[&str] = match detect_layout(dir)? {
        MovielensLayout::Ml100k => &["u.data", "u.user", "u.item", "u.genre"],
        MovielensLayout::Ml1m => &["ratings.dat", "users.dat", "movies.dat"],
    };
    Ok(names
        .iter()
        .map(|n| dir.join(n))
        .filter(|p| p.is_file() || !p.ends_with("u.genre"))
        .collect())
}

/// Loads the MovieLens folder `dir`.
pub fn load(dir: &Path, click_threshold: f32, policy: BadRowPolicy) -> Result<Dataset, DataError> {
    match detect_layout(dir)? {
        MovielensLayout::Ml100k => load_100k(dir, click_threshold, policy),
        MovielensLayout::Ml1m => load_1m(dir, click_threshold, policy),
    }
}

/// The MovieLens ratings, in stars.
pub const RATING_RANGE: std::ops::RangeInclusive<f32> = 1.0..=5.0;

/// The first row of each entity id seen in a users or items file, to catch an id listed twice.
#[derive(Default)]
struct FirstRows {
    /// id -> (line, the row's fields after the id).
    first: HashMap<String, (usize, String)>,
}

/// What a row's id means given the rows before it.
enum Admission {
    New,
    /// The same id with the same fields again: harmless, the first row is kept.
    Repeated,
    /// The same id with other fields: which row is right cannot be known.
    Conflicting { first_line: usize },
}

impl FirstRows {
    fn admit(&mut self, id: &str, line: usize, fields: &str) -> Admission {
        match self.first.get(id) {
            None => {
                self.first.insert(id.to_string(), (line, fields.to_string()));
                Admission::New
            }
            Some((_, first)) if first == fields => Admission::Repeated,
            Some((first_line, _)) => Admission::Conflicting { first_line: *first_line },
        }
    }
}

/// Checks the id of a users or items row and whether it was listed before. `Ok(false)`: skip
/// the row (a repeat, or rejected under `bad_rows = "drop"`).
fn admit_row(
    seen: &mut FirstRows,
    bad_rows: &mut BadRows,
    path: &Path,
    (line_no, line): (usize, &str),
    entity: &str,
    fields: &[&str],
) -> Result<bool, DataError> {
    let id = fields[0].trim();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        bad_rows.reject(malformed(
            path,
            line_no,
            line,
            format!("{entity} id `{}` is not a whole number", excerpt(id)),
        ))?;
        return Ok(false);
    }
    let rest: Vec<&str> = fields[1..].iter().map(|f| f.trim()).collect();
    match seen.admit(id, line_no, &rest.join("|")) {
        Admission::New => Ok(true),
        Admission::Repeated => Ok(false),
        Admission::Conflicting { first_line } => {
            bad_rows.reject(malformed(
                path,
                line_no,
                line,
                format!(
                    "{entity} id `{id}` is listed again with other fields (first at line {first_line}); \
                     keep one row per {entity}"
                ),
            ))?;
            Ok(false)
        }
    }
}

/// Raw user features before encoding.
#[derive(Default)]
struct UserRows {
    raw_ids: Vec<String>,
    index: HashMap<String, u32>,
    gender: Vec<String>,
    occupation: Vec<String>,
    age_bucket: Vec<String>,
    zip_prefix: Vec<String>,
}

impl UserRows {
    fn push(&mut self, id: &str, gender: &str, occupation: String, age_bucket: &str, zip: &str) {
        self.index.insert(id.to_string(), self.raw_ids.len() as u32);
        self.raw_ids.push(id.to_string());
        self.gender.push(gender.trim().to_string());
        self.occupation.push(occupation);
        self.age_bucket.push(age_bucket.to_string());
        self.zip_prefix.push(
            zip.trim()
                .chars()
                .next()
                .map(String::from)
                .unwrap_or_default(),
        );
    }

    fn into_table(self) -> EntityTable {
        EntityTable {
            count: self.raw_ids.len(),
            categorical: vec![
                categorical_field("age_bucket", &self.age_bucket),
                categorical_field("gender", &self.gender),
                categorical_field("occupation", &self.occupation),
                categorical_field("zip_prefix", &self.zip_prefix),
            ],
            multi_hot: vec![],
            numeric: vec![],
            raw_ids: self.raw_ids,
        }
    }
}

/// Raw item features before encoding.
#[derive(Default)]
struct ItemRows {
    raw_ids: Vec<String>,
    index: HashMap<String, u32>,
    genres: Vec<Vec<String>>,
    release_year: Vec<f32>,
}

impl ItemRows {
    fn push(&mut self, id: &str, genres: Vec<String>, release_year: f32) {
        self.index.insert(id.to_string(), self.raw_ids.len() as u32);
        self.raw_ids.push(id.to_string());
        self.genres.push(genres);
        self.release_year.push(release_year);
    }

    fn into_table(self) -> EntityTable {
        EntityTable {
            count: self.raw_ids.len(),
            categorical: vec![],
            multi_hot: vec![multi_hot_field("genre", &self.genres)],
            numeric: vec![numeric_field("release_year", self.release_year)],
            raw_ids: self.raw_ids,
        }
    }
}

/// The age bucket of an age in years: <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+.
pub fn age_bucket(age: u32) -> &'static str {
    match age {
        0..=17 => "<18",
        18..=24 => "18-24",
        25..=34 => "25-34",
        35..=44 => "35-44",
        45..=49 => "45-49",
        50..=55 => "50-55",
        _ => "56+",
    }
}

/// The 19 ML-100K genres, in flag order, used when `u.genre` is absent.
const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// ML-1M occupation codes 0..=20, as its README names them.
const ML1M_OCCUPATIONS: [&str; 21] = [
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
];

fn load_100k(dir: &Path, click_threshold: f32, policy: BadRowPolicy) -> Result<Dataset, DataError> {
    let mut bad_rows = BadRows::new(policy);

    let genre_path = dir.join("u.genre");
    let genres: Vec<String> = if genre_path.is_file() {
        let text = read_text(&genre_path)?;
        let mut by_index: Vec<(usize, String)> = Vec::new();
        for (line_no, line) in numbered_lines(&text, &genre_path)? {
            let fields: Vec<&str> = line.split('|').collect();
            match (
                fields.len(),
                fields.get(1).and_then(|i| i.trim().parse::<usize>().ok()),
            ) {
                (2, Some(index)) => by_index.push((index, fields[0].to_string())),
                _ => {
                    return Err(malformed(
                        &genre_path,
                        line_no,
                        line,
                        "expected `genre|index`",
                    ))
                }
            }
        }
        by_index.sort();
        by_index.into_iter().map(|(_, name)| name).collect()
    } else {
        ML100K_GENRES.iter().map(|g| g.to_string()).collect()
    };

    let user_path = dir.join("u.user");
    let user_text = read_text(&user_path)?;
    let mut users = UserRows::default();
    let mut seen_users = FirstRows::default();
    for (line_no, line) in numbered_lines(&user_text, &user_path)? {
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() != 5 {
            bad_rows.reject(malformed(
                &user_path,
                line_no,
                line,
                format!("expected 5 '|'-separated fields, found {}", fields.len()),
            ))?;
            continue;
        }
        let Ok(age) = fields[1].trim().parse::<u32>() else {
            bad_rows.reject(malformed(
                &user_path,
                line_no,
                line,
                "age is not a whole number",
            ))?;
            continue;
        };
        if !admit_row(&mut seen_users, &mut bad_rows, &user_path, (line_no, line), "user", &fields)? {
            continue;
        }
        users.push(
            fields[0].trim(),
            fields[2],
            fields[3].trim().to_string(),
            age_bucket(age),
            fields[4],
        );
    }

    let item_path = dir.join("u.item");
    let item_text = read_latin1(&item_path)?;
    let mut items = ItemRows::default();
    let mut seen_items = FirstRows::default();
    let expected_fields = 5 + genres.len();
    for (line_no, line) in numbered_lines(&item_text, &item_path)? {
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() != expected_fields {
            bad_rows.reject(malformed(
                &item_path,
                line_no,
                line,
                format!(
                    "expected {expected_fields} '|'-separated fields, found {}",
                    fields.len()
                ),
            ))?;
            continue;
        }
        let mut item_genres = Vec::new();
        let mut flags_ok = true;
        for (flag, genre) in fields[5..].iter().zip(&genres) {
            match flag.trim() {
                "1" => item_genres.push(genre.clone()),
                "0" => {}
                _ => flags_ok = false,
            }
        }
        if !flags_ok {
            bad_rows.reject(malformed(
                &item_path,
                line_no,
                line,
                "genre flags must be 0 or 1",
            ))?;
            continue;
        }
        if !admit_row(&mut seen_items, &mut bad_rows, &item_path, (line_no, line), "item", &fields)? {
            continue;
        }
        // Release date like "01-Jan-1995"; the year is its last four characters.
        let date = fields[2].trim();
        let year = date
            .get(date.len().saturating_sub(4)..)
            .and_then(|y| y.parse::<f32>().ok())
            .unwrap_or(f32::NAN);
        items.push(fields[0].trim(), item_genres, year);
    }

    let ratings_path = dir.join("u.data");
    let interactions = read_ratings(
        &ratings_path,
        |line| line.split('\t').collect(),
        &users.index,
        &items.index,
        click_threshold,
        &mut bad_rows,
    )?;

    Ok(Dataset {
        name: "movielens-100k".to_string(),
        users: users.into_table(),
        items: items.into_table(),
        interactions,
        dropped_rows: bad_rows.dropped,
    })
}

fn load_1m(dir: &Path, click_threshold: f32, policy: BadRowPolicy) -> Result<Dataset, DataError> {
    let mut bad_rows = BadRows::new(policy);

    let user_path = dir.join("users.dat");
    let user_text = read_latin1(&user_path)?;
    let mut users = UserRows::default();
    let mut seen_users = FirstRows::default();
    for (line_no, line) in numbered_lines(&user_text, &user_path)? {
        let fields: Vec<&str> = line.split("::").collect();
        if fields.len() != 5 {
            bad_rows.reject(malformed(
                &user_path,
                line_no,
                line,
                format!("expected 5 '::'-separated fields, found {}", fields.len()),
            ))?;
            continue;
        }
        let (Ok(age), Ok(occupation)) = (
            fields[2].trim().parse::<u32>(),
            fields[3].trim().parse::<usize>(),
        ) else {
            bad_rows.reject(malformed(
                &user_path,
                line_no,
                line,
                "age and occupation must be whole numbers",
            ))?;
            continue;
        };
        if !admit_row(&mut seen_users, &mut bad_rows, &user_path, (line_no, line), "user", &fields)? {
            continue;
        }
        // ML-1M ages are already bucket starts (1, 18, 25, 35, 45, 50, 56).
        let occupation = ML1M_OCCUPATIONS
            .get(occupation)
            .map(|o| o.to_string())
            .unwrap_or_default();
        users.push(
            fields[0].trim(),
            fields[1],
            occupation,
            age_bucket(age),
            fields[4],
        );
    }

    let item_path = dir.join("movies.dat");
    let item_text = read_latin1(&item_path)?;
    let mut items = ItemRows::default();
    let mut seen_items = FirstRows::default();
    for (line_no, line) in numbered_lines(&item_text, &item_path)? {
        let fields: Vec<&str> = line.split("::").collect();
        if fields.len() != 3 {
            bad_rows.reject(malformed(
                &item_path,
                line_no,
                line,
                format!("expected 3 '::'-separated fields, found {}", fields.len()),
            ))?;
            continue;
        }
        if !admit_row(&mut seen_items, &mut bad_rows, &item_path, (line_no, line), "item", &fields)? {
            continue;
        }
        let item_genres = fields[2]
            .split('|')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(String::from)
            .collect();
        items.push(fields[0].trim(), item_genres, year_from_title(fields[1]));
    }

    let ratings_path = dir.join("ratings.dat");
    let interactions = read_ratings(
        &ratings_path,
        |line| line.split("::").collect(),
        &users.index,
        &items.index,
        click_threshold,
        &mut bad_rows,
    )?;

    Ok(Dataset {
        name: "movielens-1m".to_string(),
        users: users.into_table(),
        items: items.into_table(),
        interactions,
        dropped_rows: bad_rows.dropped,
    })
}

/// The year in a title ending in "(1995)", NaN if there is none.
fn year_from_title(title: &str) -> f32 {
    let title = title.trim();
    if title.len() >= 6 && title.ends_with(')') {
        if let Some(year) = title.get(title.len() - 5..title.len() - 1) {
            if let Ok(year) = year.parse::<f32>() {
                return year;
            }
        }
    }
    f32::NAN
}

/// Reads `user item rating timestamp` rows split by `split`.
fn read_ratings(
    path: &Path,
    split: impl Fn(&str) -> Vec<&str>,
    user_index: &HashMap<String, u32>,
    item_index: &HashMap<String, u32>,
    click_threshold: f32,
    bad_rows: &mut BadRows,
) -> Result<Interactions, DataError> {
    let text = read_text(path)?;
    let lines = numbered_lines(&text, path)?;
    let mut interactions = Interactions {
        user: Vec::with_capacity(lines.len()),
        item: Vec::with_capacity(lines.len()),
        label: Vec::with_capacity(lines.len()),
        timestamp: Vec::with_capacity(lines.len()),
        true_probability: None,
    };
    for (line_no, line) in lines {
        let fields = split(line);
        if fields.len() != 4 {
            bad_rows.reject(malformed(
                path,
                line_no,
                line,
                format!(
                    "expected 4 fields (user item rating timestamp), found {}",
                    fields.len()
                ),
            ))?;
            continue;
        }
        let Some(&user) = user_index.get(fields[0].trim()) else {
            bad_rows.reject(malformed(
                path,
                line_no,
                line,
                format!("unknown user id `{}` (not in the users file)", excerpt(fields[0].trim())),
            ))?;
            continue;
        };
        let Some(&item) = item_index.get(fields[1].trim()) else {
            bad_rows.reject(malformed(
                path,
                line_no,
                line,
                format!("unknown item id `{}` (not in the items file)", excerpt(fields[1].trim())),
            ))?;
            continue;
        };
        let rating = match fields[2].trim().parse::<f32>() {
            Ok(r) if RATING_RANGE.contains(&r) => r,
            Ok(r) if r.is_finite() => {
                bad_rows.reject(malformed(
                    path,
                    line_no,
                    line,
                    format!(
                        "rating {r} is outside {}..={} (MovieLens stars)",
                        RATING_RANGE.start(),
                        RATING_RANGE.end()
                    ),
                ))?;
                continue;
            }
            _ => {
                bad_rows.reject(malformed(
                    path,
                    line_no,
                    line,
                    format!("rating `{}` is not a number", excerpt(fields[2].trim())),
                ))?;
                continue;
            }
        };
        let timestamp = match fields[3].trim().parse::<i64>() {
            Ok(t) if t >= 0 => t,
            Ok(t) => {
                bad_rows.reject(malformed(
                    path,
                    line_no,
                    line,
                    format!("timestamp {t} is negative (expected Unix seconds)"),
                ))?;
                continue;
            }
            Err(_) => {
                bad_rows.reject(malformed(
                    path,
                    line_no,
                    line,
                    format!("timestamp `{}` is not a whole number", excerpt(fields[3].trim())),
                ))?;
                continue;
            }
        };
        interactions.user.push(user);
        interactions.item.push(item);
        interactions
            .label
            .push(if rating >= click_threshold { 1.0 } else { 0.0 });
        interactions.timestamp.push(timestamp);
    }
    Ok(interactions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_buckets_follow_the_movielens_1m_groups() {
        assert_eq!(age_bucket(1), "<18");
        assert_eq!(age_bucket(18), "18-24");
        assert_eq!(age_bucket(49), "45-49");
        assert_eq!(age_bucket(56), "56+");
    }

    #[test]
    fn release_year_is_read_from_the_title() {
        assert_eq!(year_from_title("Toy Story (1995)"), 1995.0);
        assert!(year_from_title("Untitled").is_nan());
    }
}
