//! `graph-walk START HOPS`: follows a social-graph adjacency list for HOPS dependent reads, the
//! TAO-style case from Splinter. Key `node:ID` holds `ID,ID,...`; hop `i` goes to the neighbour at
//! index `i mod degree`. Returns the path, `ID ID ...`. Each read depends on the last one, so on a
//! compute node every hop is a network round trip.
use sandstorm_example_functions::{number, words};
use sandstorm_guest::{Error, get};

fn graph_walk(input: &[u8]) -> Result<Vec<u8>, Error> {
    let args = words(input)?;
    let Some(start) = args.first() else {
        return Err("usage: graph-walk START HOPS".into());
    };
    let hops = number(args.get(1), 8, "HOPS")?;
    let mut path = String::from(*start);
    let mut current = String::from(*start);
    for hop in 0..hops {
        let key = format!("node:{current}");
        let Some(list) = get(key.as_bytes())? else {
            return Err(Error::Message(format!("no adjacency list at {key}")));
        };
        let list = core::str::from_utf8(&list).map_err(|_| Error::from("adjacency list is not UTF-8"))?;
        let neighbours: Vec<&str> = list.split(',').filter(|s| !s.is_empty()).collect();
        if neighbours.is_empty() {
            break;
        }
        current = String::from(neighbours[(hop as usize) % neighbours.len()]);
        path.push(' ');
        path.push_str(&current);
    }
    Ok(path.into_bytes())
}
sandstorm_guest::entry!(graph_walk);
