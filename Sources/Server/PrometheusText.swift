import Foundation

/// A cumulative histogram as Prometheus keeps one: counts per upper bound, sum and count.
public struct PrometheusHistogram: Sendable {
    /// Upper bounds of the buckets, ascending (`+Inf` is implied).
    public let bounds: [Double]
    public private(set) var counts: [Int]
    public private(set) var sum = 0.0
    public private(set) var count = 0

    public init(bounds: [Double]) {
        self.bounds = bounds
        counts = [Int](repeating: 0, count: bounds.count)
    }

    public mutating func observe(_ value: Double) {
        for (i, bound) in bounds.enumerated() where value <= bound { counts[i] += 1 }
        sum += value
        count += 1
    }
}

/// Writes Prometheus' text exposition format (version 0.0.4): one `family` header, then its
/// samples. Label values are escaped; integral values print without a fraction.
public struct PrometheusText: Sendable {
    public private(set) var text = ""

    public init() {}

    public mutating func family(_ name: String, _ type: String, _ help: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    public mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
        let rendered = labels.isEmpty ? "" : "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
        let number = value.isNaN ? "NaN" : value.rounded() == value && abs(value) < 1e15 ? String(Int(value)) : String(value)
        text += "\(name)\(rendered) \(number)\n"
    }

    public mutating func histogram(_ name: String, _ h: PrometheusHistogram, _ labels: [(String, String)] = []) {
        for (bound, count) in zip(h.bounds, h.counts) { sample(name + "_bucket", labels + [("le", String(bound))], Double(count)) }
        sample(name + "_bucket", labels + [("le", "+Inf")], Double(h.count))
        sample(name + "_sum", labels, h.sum)
        sample(name + "_count", labels, Double(h.count))
    }

    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}
