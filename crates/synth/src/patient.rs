//! Synthetic patient demographics: names drawn from short lists, IDs and dates from the seed.
//! No real person's data is involved.

use crate::charset::Charset;
use crate::date::Date;
use crate::hash;

const FAMILY: [&str; 20] = [
    "Doe", "Smith", "Miller", "Brown", "Wilson", "Taylor", "Clark", "Walker", "Young", "Hall",
    "Allen", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Carter", "Mitchell",
];
const GIVEN_FEMALE: [&str; 12] = [
    "Jane", "Mary", "Anna", "Laura", "Emma", "Sofia", "Olivia", "Grace", "Helen", "Nora", "Alice",
    "Clara",
];
const GIVEN_MALE: [&str; 12] = [
    "John", "Peter", "David", "Mark", "Paul", "Lukas", "Samuel", "Thomas", "Henry", "Oscar",
    "Victor", "Daniel",
];
const MIDDLE: [&str; 6] = ["", "", "A", "M", "J", "R"];

/// One synthetic patient.
#[derive(Debug, Clone)]
pub(crate) struct Patient {
    /// Stable label used to derive this patient's UIDs (`p0`, `charset/latin1`, …).
    pub label: String,
    /// Generator seed for this patient's anatomy and noise.
    pub seed: u64,
    /// (0010,0010) Patient's Name, already encoded in `charset`.
    pub name: Vec<u8>,
    /// The Specific Character Set the name needs, `None` for the default repertoire.
    pub charset: Option<Charset>,
    /// (0010,0020) Patient ID.
    pub id: String,
    /// (0010,0030) Patient's Birth Date.
    pub birth_date: Date,
    /// (0010,0040) Patient's Sex, `F` or `M`.
    pub sex: &'static str,
}

/// The generator seed of patient `index`: the run seed itself for patient 0, so that
/// `ct_head_slice(seed, …)` reproduces the first patient's CT pixels, and a mix otherwise.
pub fn patient_seed(seed: u64, index: u32) -> u64 {
    if index == 0 {
        seed
    } else {
        hash::mix(seed, &format!("patient/{index}"))
    }
}

/// Patient `index` of a run seeded with `seed`, with an ASCII `Family^Given[^Middle]` name.
pub(crate) fn synthetic(seed: u64, index: u32) -> Patient {
    let label = format!("p{index}");
    let female = hash::mix(seed, &format!("{label}/sex")).is_multiple_of(2);
    let given = if female {
        &GIVEN_FEMALE[..]
    } else {
        &GIVEN_MALE[..]
    };
    let mut name = format!(
        "{}^{}",
        hash::pick(seed, &format!("{label}/family"), &FAMILY),
        hash::pick(seed, &format!("{label}/given"), given)
    );
    let middle = hash::pick(seed, &format!("{label}/middle"), &MIDDLE);
    if !middle.is_empty() {
        name = format!("{name}^{middle}");
    }
    Patient {
        id: format!("VS{}", hash::digits(seed, &format!("{label}/id"), 8)),
        birth_date: birth_date(seed, &label),
        sex: if female { "F" } else { "M" },
        name: name.into_bytes(),
        charset: None,
        seed: patient_seed(seed, index),
        label,
    }
}

/// A patient whose name needs `charset` (`name` must be encodable in it).
pub(crate) fn with_charset(
    seed: u64,
    key: &str,
    name: &str,
    sex: &'static str,
    charset: Charset,
) -> Patient {
    let label = format!("charset/{key}");
    Patient {
        id: format!("VC{}", hash::digits(seed, &format!("{label}/id"), 8)),
        birth_date: birth_date(seed, &label),
        sex,
        name: charset
            .encode(name)
            .unwrap_or_else(|| panic!("{name:?} is not encodable in {charset:?}")),
        charset: Some(charset),
        seed: hash::mix(seed, &label),
        label,
    }
}

/// A birth date between 1940 and 1999.
fn birth_date(seed: u64, label: &str) -> Date {
    let start = Date {
        year: 1940,
        month: 1,
        day: 1,
    };
    start.plus_days((hash::mix(seed, &format!("{label}/birth")) % (60 * 365)) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plausible_and_deterministic() {
        for i in 0..20 {
            let p = synthetic(99, i);
            let name = String::from_utf8(p.name.clone()).unwrap();
            let parts: Vec<&str> = name.split('^').collect();
            assert!((2..=3).contains(&parts.len()), "{name}");
            assert!(FAMILY.contains(&parts[0]));
            let given = if p.sex == "F" {
                &GIVEN_FEMALE
            } else {
                &GIVEN_MALE
            };
            assert!(given.contains(&parts[1]), "{name} {}", p.sex);
            assert_eq!(p.id.len(), 10);
            assert!((1940..2000).contains(&p.birth_date.year));
            assert_eq!(synthetic(99, i).name, p.name);
        }
        assert_eq!(patient_seed(5, 0), 5);
        assert_ne!(patient_seed(5, 1), 5);
    }
}
