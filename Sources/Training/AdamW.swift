import Foundation
import Llama

/// AdamW as PyTorch computes it (decoupled weight decay, bias-corrected moments):
/// p ← p·(1 − lr·λ); m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
/// p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε).
public struct AdamW: Sendable {
    /// lr.
    public var learningRate: Float
    /// β₁, the first moment's decay.
    public var beta1: Float
    /// β₂, the second moment's decay.
    public var beta2: Float
    /// ε in the denominator.
    public var epsilon: Float
    /// λ, decoupled weight decay.
    public var weightDecay: Float
    /// Steps taken (t).
    public private(set) var step = 0
    private var m: LoRAAdapter
    private var v: LoRAAdapter

    /// An optimizer with zero moments for parameters shaped like `adapter`.
    public init(for adapter: LoRAAdapter, model: LlamaConfig, learningRate: Float = 5e-4, beta1: Float = 0.9,
                beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        m = .zeros(config: adapter.config, model: model)
        v = m
    }

    /// Applies one update to `params` with `gradients` (same shape).
    public mutating func update(_ params: inout LoRAAdapter, gradients: LoRAAdapter) {
        step += 1
        let t = Float(step)
        let correction1 = 1 - powf(beta1, t), correction2 = 1 - powf(beta2, t)
        let stepSize = learningRate / correction1, root2 = correction2.squareRoot()
        let (b1, b2, eps, decay) = (beta1, beta2, epsilon, 1 - learningRate * weightDecay)
        func apply(_ p: inout [Float], _ g: [Float], _ m: inout [Float], _ v: inout [Float]) {
            for i in p.indices {
                p[i] *= decay
                m[i] = b1 * m[i] + (1 - b1) * g[i]
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
                p[i] -= stepSize * m[i] / (v[i].squareRoot() / root2 + eps)
            }
        }
        for key in params.keys {
            // Taken out of their dictionaries while written, so no array is copied.
            var p = params.weights.removeValue(forKey: key)!
            var mk = m.weights.removeValue(forKey: key)!, vk = v.weights.removeValue(forKey: key)!
            let g = gradients.weights[key]!
            apply(&p.a, g.a, &mk.a, &vk.a)
            apply(&p.b, g.b, &mk.b, &vk.b)
            params.weights[key] = p
            m.weights[key] = mk
            v.weights[key] = vk
        }
    }
}

extension LoRAAdapter {
    /// √(Σ of squares) over every factor.
    public var norm: Double {
        var sum = 0.0
        for w in weights.values {
            for x in w.a { sum += Double(x) * Double(x) }
            for x in w.b { sum += Double(x) * Double(x) }
        }
        return sum.squareRoot()
    }

    /// Multiplies every factor by `k`.
    public mutating func scale(by k: Float) {
        for key in keys {
            var w = weights.removeValue(forKey: key)!
            for i in w.a.indices { w.a[i] *= k }
            for i in w.b.indices { w.b[i] *= k }
            weights[key] = w
        }
    }
}
