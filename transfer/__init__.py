"""Transfer of pretrained trunks (SWAG section 4): downstream data, cached frozen features, the
linear probe, few-shot, zero-shot and finetuning protocols, and the tables that compare them."""
