//! A received row's columns: its values in the order sent, and their names as a list shared
//! by every row shipped with the same names in the same order.
//!
//! A table's rows nearly always carry the same names, so reading one looks its names up among
//! the lists read lately (per thread) instead of building them again: a row costs no name
//! allocation, and the receiver's later steps (validation, the plan's layouts) see that two
//! rows are named alike by comparing two pointers. bench-apply's receiver spent a third of its
//! CPU in the parse, most of it on names (building them, then comparing them row by row).

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use smol_str::SmolStr;

/// Column names in the order shipped, shared by the rows named alike.
pub type Names = Arc<[SmolStr]>;

/// How many name lists a thread keeps for the rows it reads next (a batch names a few per
/// table it touches).
const LISTS_KEPT: usize = 32;

/// Lists longer than this are not kept (a body's size caps them; none of the mapping's tables
/// has half as many columns).
const LIST_KEPT_MAX: usize = 256;

thread_local! {
    /// The lists read lately by this thread, the newest last.
    static LISTS: RefCell<Vec<Names>> = const { RefCell::new(Vec::new()) };
}

/// A JSON object's members in the order sent: the names shared (see the module), the values
/// the row's own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    names: Names,
    values: Vec<Value>,
}

impl Columns {
    /// Members from (name, value) pairs.
    pub fn new(members: impl IntoIterator<Item = (SmolStr, Value)>) -> Self {
        let (names, values): (Vec<SmolStr>, Vec<Value>) = members.into_iter().unzip();
        Self {
            names: names.into(),
            values,
        }
    }

    /// The value of the first member named `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| &self.values[i])
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The members' names, in the order sent.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The members, in the order sent.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.names.iter().map(SmolStr::as_str).zip(&self.values)
    }

    /// The values, in the order sent.
    pub fn into_values(self) -> Vec<Value> {
        self.values
    }

    /// Whether `other` has the same names in the same order (one pointer comparison when
    /// both were read by the same thread).
    pub fn named_like(&self, other: &Columns) -> bool {
        Arc::ptr_eq(&self.names, &other.names) || self.names == other.names
    }
}

impl From<Map<String, Value>> for Columns {
    fn from(map: Map<String, Value>) -> Self {
        Self::new(map.into_iter().map(|(n, v)| (n.into(), v)))
    }
}

/// A member's name as read: borrowed from the body unless JSON escapes had to be undone.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a column name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// The names of a row being read: a kept list whose first names are those read so far, or,
/// once none is, the names themselves.
enum Reading {
    Kept(Option<Names>),
    Own(Vec<SmolStr>),
}

impl Reading {
    /// Takes the `i`th name, `key`.
    fn push(&mut self, i: usize, key: &str) {
        match self {
            Reading::Kept(list) => {
                if list
                    .as_ref()
                    .is_some_and(|l| l.get(i).is_some_and(|n| n == key))
                {
                    return;
                }
                let read = list.as_ref().map_or(&[][..], |l| &l[..i]);
                match kept(|l| l.len() > i && &l[..i] == read && l[i] == key) {
                    Some(found) => *list = Some(found),
                    None => {
                        let mut own = read.to_vec();
                        own.push(key.into());
                        *self = Reading::Own(own);
                    }
                }
            }
            Reading::Own(own) => own.push(key.into()),
        }
    }

    /// The list of the `n` names read.
    fn finish(self, n: usize) -> Names {
        let own = match self {
            Reading::Kept(None) => return Names::default(),
            Reading::Kept(Some(list)) if list.len() == n => return list,
            Reading::Kept(Some(list)) => {
                if let Some(found) = kept(|l| l.len() == n && l[..] == list[..n]) {
                    return found;
                }
                list[..n].to_vec()
            }
            Reading::Own(own) => own,
        };
        let list: Names = own.into();
        if list.len() <= LIST_KEPT_MAX {
            LISTS.with_borrow_mut(|lists| {
                if lists.len() == LISTS_KEPT {
                    lists.remove(0);
                }
                lists.push(list.clone());
            });
        }
        list
    }
}

/// The newest kept list that `matches`.
fn kept(matches: impl Fn(&[SmolStr]) -> bool) -> Option<Names> {
    LISTS.with_borrow(|lists| lists.iter().rev().find(|l| matches(l)).cloned())
}

impl<'de> Deserialize<'de> for Columns {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Columns;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of column values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Columns, A::Error> {
                let mut values = Vec::with_capacity(map.size_hint().unwrap_or(16).min(64));
                let mut names = Reading::Kept(None);
                while let Some(Key(key)) = map.next_key::<Key>()? {
                    names.push(values.len(), &key);
                    values.push(map.next_value()?);
                }
                Ok(Columns {
                    names: names.finish(values.len()),
                    values,
                })
            }
        }
        deserializer.deserialize_map(Members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Columns {
        serde_json::from_str(json).unwrap()
    }

    fn names(c: &Columns) -> Vec<&str> {
        c.names().iter().map(SmolStr::as_str).collect()
    }

    #[test]
    fn rows_named_alike_share_one_list() {
        let a = read(r#"{"obs_id": 1, "value_text": "x", "concept_id": 5}"#);
        let b = read(r#"{"obs_id": 2, "value_text": "y", "concept_id": 6}"#);
        assert!(Arc::ptr_eq(a.names(), b.names()));
        assert_eq!(names(&b), ["obs_id", "value_text", "concept_id"]);
        assert_eq!(b.get("value_text"), Some(&Value::from("y")));
        assert_eq!(b.get("missing"), None);
        // a prefix of a kept list, the same names in another order, one name more, escapes
        let short = read(r#"{"obs_id": 3, "value_text": "z"}"#);
        let other = read(r#"{"value_text": "z", "obs_id": 3, "concept_id": 7}"#);
        let longer = read(r#"{"obs_id": 4, "value_text": "w", "concept_id": 8, "x": null}"#);
        let escaped = read(r#"{"obs\u005fid": 5, "value_text": "v", "concept_id": 9}"#);
        assert_eq!(names(&short), ["obs_id", "value_text"]);
        assert_eq!(names(&other), ["value_text", "obs_id", "concept_id"]);
        assert_eq!(names(&longer), ["obs_id", "value_text", "concept_id", "x"]);
        assert!(Arc::ptr_eq(a.names(), escaped.names()));
        assert!(a.named_like(&escaped) && !a.named_like(&other) && !a.named_like(&short));
        // the prefix is kept too
        let short_again = read(r#"{"obs_id": 6, "value_text": "u"}"#);
        assert!(Arc::ptr_eq(short.names(), short_again.names()));
        assert_eq!(
            short_again.into_values(),
            [Value::from(6), Value::from("u")]
        );
        assert!(read("{}").is_empty());
        // the same names read by another thread: alike, not shared
        let there =
            std::thread::spawn(|| read(r#"{"obs_id": 1, "value_text": "x", "concept_id": 5}"#))
                .join()
                .unwrap();
        assert!(!Arc::ptr_eq(a.names(), there.names()) && a.named_like(&there));
        assert_eq!(a, there);
    }

    #[test]
    fn the_lists_kept_are_bounded() {
        let many: Vec<Columns> = (0..LISTS_KEPT + 8)
            .map(|i| read(&format!(r#"{{"c{i}": {i}}}"#)))
            .collect();
        LISTS.with_borrow(|lists| assert_eq!(lists.len(), LISTS_KEPT));
        assert_eq!(names(&many[3]), ["c3"]);
        let wide = (0..LIST_KEPT_MAX + 1)
            .map(|i| format!(r#""w{i}": 0"#))
            .collect::<Vec<_>>()
            .join(",");
        let first = read(&format!("{{{wide}}}"));
        let second = read(&format!("{{{wide}}}"));
        assert_eq!(first.len(), LIST_KEPT_MAX + 1);
        assert!(!Arc::ptr_eq(first.names(), second.names()) && first.named_like(&second));
    }
}
