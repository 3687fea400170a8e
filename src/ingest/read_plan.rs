//! The Modbus request planner: per device and poll class, merges the registers a profile maps
//! into the fewest reads, bridging gaps up to `max_gap` and never beyond the protocol maximum
//! (125 registers, 2000 bits) or the device's own limit. Pure: the poller executes the plan.

use crate::decode::registers::{Area, ModbusProfile, RegisterDecoder};

/// Protocol maxima for one read (Modbus application protocol v1.1b3, 6.1-6.4).
pub const MAX_REGISTERS: u16 = 125;
pub const MAX_BITS: u16 = 2000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub area: Area,
    /// PDU address of the first register or bit.
    pub start: u16,
    pub count: u16,
    /// Indices (into the decoder list) of the values this read covers.
    pub values: Vec<usize>,
}

#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    pub max_gap: u16,
    pub max_registers: u16,
    pub one_register_per_request: bool,
}

impl From<&ModbusProfile> for PlanOptions {
    fn from(p: &ModbusProfile) -> Self {
        PlanOptions {
            max_gap: p.max_gap,
            max_registers: p.max_registers_per_request.clamp(1, MAX_REGISTERS),
            one_register_per_request: p.one_register_per_request,
        }
    }
}

/// The reads for one poll class, ordered by area and address.
pub fn plan(
    decoders: &[RegisterDecoder],
    poll_class: &str,
    options: PlanOptions,
) -> Vec<ReadRequest> {
    let mut wanted: Vec<(Area, u16, u16, usize)> = decoders
        .iter()
        .enumerate()
        .filter(|(_, d)| d.poll_class() == poll_class)
        .map(|(i, d)| (d.area(), d.pdu_address, d.width(), i))
        .collect();
    wanted.sort_by_key(|&(area, address, width, i)| (area, address, width, i));
    let mut requests: Vec<ReadRequest> = Vec::new();
    for (area, address, width, index) in wanted {
        let limit = if area.is_bit() {
            MAX_BITS
        } else {
            options.max_registers
        };
        let end = u32::from(address) + u32::from(width);
        if let Some(last) = requests.last_mut() {
            let last_end = u32::from(last.start) + u32::from(last.count);
            let merged_count = end.max(last_end) - u32::from(last.start);
            let fits = last.area == area
                && !options.one_register_per_request
                && u32::from(address) <= last_end + u32::from(options.max_gap)
                && merged_count <= u32::from(limit);
            if fits {
                last.count = merged_count as u16;
                last.values.push(index);
                continue;
            }
        }
        requests.push(ReadRequest {
            area,
            start: address,
            count: width,
            values: vec![index],
        });
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::registers::ModbusProfile;

    fn profile(registers: &str, options: &str) -> (ModbusProfile, Vec<RegisterDecoder>) {
        let p: ModbusProfile = toml::from_str(&format!("{options}\n{registers}")).unwrap();
        let decoders = p
            .registers
            .iter()
            .map(|r| RegisterDecoder::new(r, p.address_base))
            .collect();
        (p, decoders)
    }

    fn reg(q: &str, address: u16, ty: &str) -> String {
        format!("[[registers]]\nquantity = \"{q}\"\narea = \"holding\"\naddress = {address}\ntype = \"{ty}\"\n")
    }

    fn spans(requests: &[ReadRequest]) -> Vec<(u16, u16)> {
        requests.iter().map(|r| (r.start, r.count)).collect()
    }

    #[test]
    fn adjacent_registers_are_one_read() {
        let regs = [
            reg("a", 20, "u16"),
            reg("b", 21, "u16"),
            reg("c", 22, "u32"),
        ]
        .concat();
        let (p, d) = profile(&regs, "");
        assert_eq!(spans(&plan(&d, "fast", (&p).into())), [(20, 4)]);
    }

    #[test]
    fn gaps_up_to_max_gap_are_bridged_larger_ones_split() {
        let regs = [reg("a", 0, "u16"), reg("b", 5, "u16"), reg("c", 20, "u16")].concat();
        let (p, d) = profile(&regs, "max_gap = 4");
        assert_eq!(spans(&plan(&d, "fast", (&p).into())), [(0, 6), (20, 1)]);
    }

    #[test]
    fn reads_never_exceed_the_protocol_maximum() {
        let regs: String = (0..130).map(|i| reg(&format!("r{i}"), i, "u16")).collect();
        let (p, d) = profile(&regs, "");
        let requests = plan(&d, "fast", (&p).into());
        assert_eq!(spans(&requests), [(0, 125), (125, 5)]);
    }

    #[test]
    fn a_multi_register_value_is_never_split_across_reads() {
        let regs = [reg("a", 0, "u16"), reg("b", 9, "f32")].concat();
        let (p, d) = profile(&regs, "max_registers_per_request = 10");
        assert_eq!(spans(&plan(&d, "fast", (&p).into())), [(0, 1), (9, 2)]);
    }

    #[test]
    fn one_register_per_request_devices_get_one_read_per_value() {
        let regs = [reg("a", 0, "u16"), reg("b", 1, "u32")].concat();
        let (p, d) = profile(&regs, "one_register_per_request = true");
        assert_eq!(spans(&plan(&d, "fast", (&p).into())), [(0, 1), (1, 2)]);
    }

    #[test]
    fn areas_and_poll_classes_are_planned_apart() {
        let regs = [
            reg("a", 0, "u16"),
            "[[registers]]\nquantity = \"i\"\narea = \"input\"\naddress = 1\ntype = \"u16\"\n".into(),
            "[[registers]]\nquantity = \"e\"\narea = \"holding\"\naddress = 2\ntype = \"u16\"\npoll = \"slow\"\n".into(),
        ]
        .concat();
        let (p, d) = profile(&regs, "");
        let fast = plan(&d, "fast", (&p).into());
        assert_eq!(fast.len(), 2);
        assert_eq!((fast[0].area, fast[1].area), (Area::Holding, Area::Input));
        assert_eq!(spans(&plan(&d, "slow", (&p).into())), [(2, 1)]);
    }

    #[test]
    fn one_based_profiles_plan_pdu_addresses() {
        let (p, d) = profile(&reg("a", 40, "u16"), "address_base = 1");
        assert_eq!(spans(&plan(&d, "fast", (&p).into())), [(39, 1)]);
    }

    #[test]
    fn bits_may_span_up_to_2000() {
        let regs: String = [0u16, 1999, 2000]
            .iter()
            .map(|a| format!("[[registers]]\nquantity = \"c{a}\"\narea = \"coil\"\naddress = {a}\ntype = \"bit\"\n"))
            .collect();
        let (p, d) = profile(&regs, "max_gap = 2000");
        assert_eq!(
            spans(&plan(&d, "fast", (&p).into())),
            [(0, 2000), (2000, 1)]
        );
    }
}
